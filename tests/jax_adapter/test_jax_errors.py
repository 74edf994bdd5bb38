"""Bad input gives a clear error that names the path or argument and what to do."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
from helpers import Spy, example_inputs

import tess_ad
from tess_ad.jax import apply_tesseract

X = jnp.array([-1.2, 1.0, 0.5, 2.0])
MODES = ["eager", "jit"]


def _run(fn, mode, *args):
    return (jax.jit(fn) if mode == "jit" else fn)(*args)


def _assert_names_fixes(message: str, path: str) -> None:
    assert repr(path) in message
    assert "non-symbolic-zero tangent" in message  # what tesseract-jax's tests match
    assert "Differentiable[...]" in message
    assert "close over it" in message
    assert "jax.lax.stop_gradient" in message


# -- tangents on non-differentiable leaves ------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_grad_through_a_static_scalar_names_it(local_tesseract, mode):
    client = local_tesseract("rosenbrock")
    inputs = {"x": X, "a": 1.0, "b": 100.0}
    with pytest.raises(ValueError, match="non-zero derivative") as err:
        _run(jax.grad(lambda d: apply_tesseract(client, d)["loss"]), mode, inputs)
    _assert_names_fixes(str(err.value), "a")


@pytest.mark.parametrize("mode", MODES)
def test_stop_gradient_is_the_documented_fix(local_tesseract, mode):
    client = local_tesseract("rosenbrock")
    inputs = {"x": X, "a": 1.0, "b": 100.0}

    def f(d):
        d = dict(d, a=jax.lax.stop_gradient(d["a"]), b=jax.lax.stop_gradient(d["b"]))
        return apply_tesseract(client, d)["loss"]

    grads = _run(jax.grad(f), mode, inputs)
    expected = jax.grad(
        lambda x: apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]
    )(X)
    np.testing.assert_array_equal(grads["x"], expected)
    assert float(grads["a"]) == float(grads["b"]) == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_jvp_on_a_static_array_names_it(local_tesseract, mode):
    client = local_tesseract("float32")
    x = jnp.ones(3, jnp.float32)

    def f(shift):
        return apply_tesseract(client, {"x": x, "w": np.float32(1.0), "shift": shift})[
            "y"
        ]

    shift = jnp.zeros(3, jnp.float32)
    with pytest.raises(ValueError, match="non-zero derivative") as err:
        _run(lambda s, t: jax.jvp(f, (s,), (t,)), mode, shift, jnp.ones(3, jnp.float32))
    _assert_names_fixes(str(err.value), "shift")


@pytest.mark.parametrize("mode", MODES)
def test_grad_through_a_nested_static_array_names_its_path(local_tesseract, mode):
    fd = tess_ad.with_finite_differences(local_tesseract("nested"))
    inputs = example_inputs("nested")
    apply_tesseract(fd, inputs)  # records the output shapes for jit

    def f(scale):
        layers = [dict(inputs["layers"][0], scale=scale), inputs["layers"][1]]
        return apply_tesseract(fd, dict(inputs, layers=layers))["summary"]["sumsq"]

    with pytest.raises(ValueError, match="non-zero derivative") as err:
        _run(jax.grad(f), mode, jnp.asarray(inputs["layers"][0]["scale"]))
    _assert_names_fixes(str(err.value), "layers.[0].scale")


# -- inputs that do not fit the schema -------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("inputs", "fragments"),
    [
        ({"a": 1.0, "b": 100.0}, ["missing required field", "'x'"]),
        ({"x": X, "a": 1.0, "b": 100.0, "c": 3.0}, ["unknown field 'c'", "a, b"]),
        ({"x": jnp.ones((2, 2)), "a": 1.0, "b": 100.0}, ["'x'", "shape (2, 2)"]),
        ({"x": "abc", "a": 1.0, "b": 100.0}, ["'x'", "pass an array"]),
        ([X], ["dict"]),
    ],
    ids=["missing", "unknown", "shape", "type", "not-a-dict"],
)
def test_inputs_not_matching_the_schema(local_tesseract, inputs, fragments, mode):
    client = local_tesseract("rosenbrock")
    with pytest.raises(tess_ad.SchemaError) as err:
        if mode == "eager":
            apply_tesseract(client, inputs)
        else:
            arrays = [
                leaf for leaf in jax.tree.leaves(inputs) if isinstance(leaf, jax.Array)
            ]
            jax.jit(lambda *a: apply_tesseract(client, inputs))(*arrays)
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.parametrize("kind", ["local", "served"])
def test_shape_error_under_jit_is_what_a_tesseract_jax_user_catches(
    test_tesseract, served_test_tesseract, kind
):
    """tesseract-jax users catch pydantic's ValidationError ("Expected shape: ...").

    Ours is raised at trace time, before any endpoint call, and is at once a
    ``pydantic.ValidationError``, a ``ValueError`` and a ``tess_ad.SchemaError``.
    """
    client = (
        test_tesseract("fixed_shapes")
        if kind == "local"
        else served_test_tesseract("fixed_shapes")
    )
    f = jax.jit(lambda x: apply_tesseract(client, {"x": x})["y"])
    with Spy(client) as spy:
        with pytest.raises(
            pydantic.ValidationError, match=r"Expected shape: \(3,\)"
        ) as err:
            f(jnp.zeros(4))
        try:  # what a user of tesseract-jax or of a Tesseract writes
            f(jnp.zeros(4))
        except ValueError as exc:
            caught = exc
    assert sum(spy.calls.values()) == 0
    assert isinstance(err.value, tess_ad.SchemaError)
    assert isinstance(caught, tess_ad.SchemaError)
    assert "inputs path 'x' has shape (4,)" in str(err.value)
    assert err.value.errors()[0]["type"] == "tess_ad_schema"


def test_nested_shape_error_names_the_nested_path(local_tesseract):
    client = local_tesseract("meshstats_fd")
    inputs = example_inputs("meshstats_fd")
    bad = dict(inputs, mesh=dict(inputs["mesh"], points=jnp.ones((5, 2))))
    with pytest.raises(tess_ad.SchemaError, match=r"mesh\.points"):
        jax.jit(
            lambda p: apply_tesseract(
                client, dict(bad, mesh=dict(bad["mesh"], points=p))
            )
        )(jnp.ones((5, 2)))


# -- no gradient route -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transform", ["grad", "jvp"])
def test_no_gradient_route_names_with_finite_differences(
    local_tesseract, mode, transform
):
    client = local_tesseract("nested")
    inputs = example_inputs("nested")
    params = {k: jnp.asarray(v) for k, v in inputs["params"].items()}
    apply_tesseract(client, inputs)  # records the output shapes for jit

    def f(p):
        return apply_tesseract(client, dict(inputs, params=p))["summary"]["sumsq"]

    if transform == "grad":
        fn = jax.grad(f)
        args = (params,)
    else:
        fn = lambda p, t: jax.jvp(f, (p,), (t,))  # noqa: E731
        args = (params, jax.tree.map(jnp.ones_like, params))
    with pytest.raises(tess_ad.NoGradientRouteError, match="with_finite_differences"):
        _run(fn, mode, *args)


@pytest.mark.parametrize("mode", MODES)
def test_reverse_only_tesseract_refuses_forward_mode_clearly(test_tesseract, mode):
    client = test_tesseract("fixed_shapes")

    def f(x):
        return apply_tesseract(client, {"x": x})["total"]

    x = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(_run(jax.grad(f), mode, x), 4.0 * x, rtol=1e-15)
    with pytest.raises(tess_ad.NoGradientRouteError, match="forward-mode"):
        _run(lambda x: jax.jvp(f, (x,), (x,)), mode, x)


# -- the Tesseract itself fails ------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "served", "served-debug"])
@pytest.mark.parametrize("mode", MODES)
def test_tesseract_error_message_reaches_the_user(
    test_tesseract, served_test_tesseract, kind, mode
):
    """The client's exception text arrives unchanged, eagerly and from jit callbacks.

    A served Tesseract answers a failing endpoint with a bare HTTP 500 (the
    message stays in the server log) unless the server runs with
    TESSERACT_DEBUG=1, when the response carries the Tesseract's message.
    """
    client = (
        test_tesseract("raising")
        if kind == "local"
        else served_test_tesseract("raising", debug=kind == "served-debug")
    )
    own = kind != "served"
    apply_message = (
        "x must be non-negative, got min -1.0" if own else "Error 500 from Tesseract"
    )
    vjp_message = (
        "the VJP endpoint is broken on purpose" if own else "Error 500 from Tesseract"
    )

    def y(x):
        return apply_tesseract(client, {"x": x})["y"]

    with pytest.raises(Exception, match=apply_message):
        _run(y, mode, jnp.array([-1.0, 4.0]))
    np.testing.assert_allclose(_run(y, mode, jnp.array([1.0, 4.0])), [1.0, 2.0])
    with pytest.raises(Exception, match=vjp_message):
        _run(jax.grad(lambda x: y(x).sum()), mode, jnp.array([1.0, 4.0]))


def test_abstract_eval_disagreeing_with_apply_is_an_error_not_wrong_numbers(
    test_tesseract,
):
    client = test_tesseract("lying")
    with pytest.raises(
        Exception, match=r"abstract_eval endpoint announced \{y: float64\[4\]\}"
    ):
        jax.jit(lambda x: apply_tesseract(client, {"x": x}))(jnp.ones(3))


# -- output shapes unknown under jit -----------------------------------------------------


def test_unknown_output_shapes_under_jit_say_what_to_add(local_tesseract):
    client = tess_ad.with_finite_differences(
        local_tesseract("nested")
    )  # fresh: no records
    inputs = example_inputs("nested")
    params = {k: jnp.asarray(v) for k, v in inputs["params"].items()}
    f = jax.jit(lambda p: apply_tesseract(client, dict(inputs, params=p))["out"])
    with pytest.raises(ValueError, match="cannot tell the output shapes") as err:
        f(params)
    assert isinstance(err.value, tess_ad.jax.OutputShapeError)  # public name to catch
    for fragment in (
        "abstract_eval",
        "OutputSchema",
        "once eagerly",
        "params.{alpha}: float64[3]",
    ):
        assert fragment in str(err.value)
    apply_tesseract(
        client, dict(inputs, params=params)
    )  # the third fix: one eager call
    np.testing.assert_allclose(
        f(params), apply_tesseract(client, inputs)["out"], rtol=1e-15
    )


# -- unsupported derivatives and arguments ---------------------------------------------------


def test_third_order_is_refused(local_tesseract):
    client = local_tesseract("rosenbrock")

    def f(x):
        return apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]

    with pytest.raises(NotImplementedError, match="third and higher"):
        jax.jacrev(jax.jacrev(jax.jacrev(f)))(X)


def test_forward_over_forward_is_refused_with_a_pointer_to_hessian(local_tesseract):
    client = local_tesseract("float32")
    shift = np.zeros(3, np.float32)

    def f(x):
        return apply_tesseract(client, {"x": x, "w": np.float32(1.0), "shift": shift})[
            "energy"
        ]

    with pytest.raises(NotImplementedError, match=r"jax\.hessian"):
        jax.jacfwd(jax.jacfwd(f))(jnp.ones(3, jnp.float32))
    assert jax.hessian(f)(jnp.ones(3, jnp.float32)).shape == (3, 3)


def test_bad_arguments(local_tesseract):
    client = local_tesseract("rosenbrock")
    inputs = {"x": X, "a": 1.0, "b": 100.0}
    with pytest.raises(ValueError, match="unknown vmap_method 'parallel'"):
        apply_tesseract(client, inputs, vmap_method="parallel")
    with pytest.raises(ValueError, match="materialize_jacobian"):
        apply_tesseract(client, inputs, materialize_jacobian="yes")
    with pytest.raises(TypeError, match="Tesseract client"):
        apply_tesseract(object(), inputs)


def test_transposing_with_respect_to_the_inputs_is_refused_clearly(local_tesseract):
    """``linear_transpose`` of a JVP in both primals and tangents: no endpoint gives it."""
    client = local_tesseract("rosenbrock")
    x = jnp.array([0.5, 1.5])

    def f(x):
        return apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]

    transpose = jax.linear_transpose(lambda p: jax.jvp(f, (p,), (p,))[1], x)
    with pytest.raises(ValueError, match="UndefinedPrimal") as info:
        transpose(jnp.float64(1.0))
    assert isinstance(info.value, NotImplementedError)  # what it raised before
