"""``with_finite_differences``: call counts, accuracy, interface and bad arguments, on real Tesseracts."""

import inspect
import re

import numpy as np
import pytest
import references
from helpers import Spy, assert_trees_close, example_inputs

import tess_ad
from tess_ad import SchemaError, tesseract_schema

NESTED_OUTS = ["out", "summary.{sumsq}", "summary.{mean}"]


def nested_case(tesseract):
    inputs = example_inputs("nested")
    flat = tesseract_schema(tesseract).inputs.flatten(inputs)
    paths = list(flat.differentiable_paths)
    x = {p: np.asarray(flat[p].value, dtype=np.float64) for p in paths}
    return inputs, flat, paths, x


def nested_reference(flat, x):
    import jax.numpy as jnp

    def fun(v):
        return references.nested_flat(
            v, lambda upd: flat.unflatten({p: jnp.asarray(a) for p, a in upd.items()})
        )

    return references.jacobian_by_path(fun, {p: jnp.asarray(a) for p, a in x.items()})


@pytest.mark.parametrize(
    ("method", "kwargs", "calls", "rtol"),
    [
        # errors measured here: 2.9e-10 (central, ~eps^(2/3) times the curvature)
        # and 9.1e-8 (forward, ~eps^(1/2)); the bounds leave about 30x and 100x
        ("central", {}, lambda n: 2 * n, 1e-8),
        ("forward", {}, lambda n: n + 1, 1e-5),
    ],
)
def test_jacobian_of_nested_tesseract(tesseract_factory, method, kwargs, calls, rtol):
    t = tesseract_factory("nested")  # only apply: no gradient endpoints at all
    inputs, flat, paths, x = nested_case(t)
    n = sum(v.size for v in x.values())
    assert n == 20
    with Spy(t) as spy:
        fd = tess_ad.with_finite_differences(t, method=method, **kwargs)
        jac = fd.jacobian(inputs, paths, NESTED_OUTS)
    assert spy.calls["apply"] == calls(n)  # one sweep serves all three output paths
    want = nested_reference(flat, x)
    assert_trees_close(
        jac,
        {o: {p: np.asarray(want[o][p]) for p in paths} for o in NESTED_OUTS},
        rtol=rtol,
        atol=rtol,
    )


def test_vjp_and_jvp_of_nested_tesseract(local_tesseract):
    t = local_tesseract("nested")
    inputs, flat, paths, x = nested_case(t)
    want = nested_reference(flat, x)
    ct = {
        "out": np.array([1.0, -0.5, 2.0]),
        "summary.{sumsq}": np.array(0.3),
        "summary.{mean}": np.array(-1.0),
    }
    tangent = {p: np.linspace(-1, 1, v.size).reshape(v.shape) for p, v in x.items()}
    fd = tess_ad.with_finite_differences(t)
    with Spy(t) as spy:
        vjp = fd.vector_jacobian_product(inputs, paths, NESTED_OUTS, ct)
        assert spy.calls["apply"] == 40
        jvp = fd.jacobian_vector_product(inputs, paths, NESTED_OUTS, tangent)
        assert spy.calls["apply"] == 42  # a JVP is 2 calls, whatever the size
    want_vjp = {
        p: sum(
            np.tensordot(ct[o], np.asarray(want[o][p]), axes=np.ndim(ct[o])) for o in ct
        )
        for p in paths
    }
    want_jvp = {
        o: sum(
            np.tensordot(np.asarray(want[o][p]), tangent[p], axes=tangent[p].ndim)
            for p in paths
        )
        for o in NESTED_OUTS
    }
    assert_trees_close(vjp, want_vjp, rtol=1e-8, atol=1e-9)
    assert_trees_close(jvp, want_jvp, rtol=1e-7, atol=1e-8)


def test_stochastic_costs_two_calls_per_sample(local_tesseract):
    t = local_tesseract("nested")
    inputs, _, paths, _ = nested_case(t)
    fd = tess_ad.with_finite_differences(t, method="stochastic", num_samples=4, seed=3)
    with Spy(t) as spy:
        a = fd.vector_jacobian_product(inputs, paths, ["out"], {"out": np.ones(3)})
        assert spy.calls["apply"] == 8
        b = fd.vector_jacobian_product(inputs, paths, ["out"], {"out": np.ones(3)})
    assert_trees_close(a, b, rtol=0)  # seeded: reproducible


def test_analytic_rosenbrock_against_its_own_endpoints(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    inputs = example_inputs("rosenbrock")
    exact = t.jacobian(inputs, ["x"], ["loss", "residuals"])
    fd = tess_ad.with_finite_differences(t)
    assert_trees_close(
        fd.jacobian(inputs, ["x"], ["loss", "residuals"]), exact, rtol=1e-8, atol=1e-7
    )


def test_float32_results_stay_float32(local_tesseract):
    t = local_tesseract("float32")
    inputs = example_inputs("float32")
    ct = {"y": np.ones(3, np.float32), "energy": np.float32(1.0)}
    exact = t.vector_jacobian_product(inputs, ["x", "w"], ["y", "energy"], ct)
    got = tess_ad.with_finite_differences(t).vector_jacobian_product(
        inputs, ["x", "w"], ["y", "energy"], ct
    )
    assert {p: v.dtype for p, v in got.items()} == {"x": np.float32, "w": np.float32}
    # float32 central differences: error ~ eps32^(2/3) ~ 3e-5 relative
    assert_trees_close(got, exact, rtol=2e-3, atol=2e-3)


def test_badly_scaled_inputs_scale_aware_vs_tesseract_core(local_tesseract):
    """Inputs near 1e6, 1 and 1e-6: the default step is right at every scale; an absolute one is not."""
    from tesseract_core.runtime.experimental import (
        finite_difference_jacobian as core_jacobian,
    )

    t = local_tesseract("scales")
    x = np.array([1.5e6, 2.0e6, 0.7, 1.3, 3e-6, 1e-6])
    inputs = {"x": x}
    want = np.diag(3 * x**2)
    ours = tess_ad.with_finite_differences(t).jacobian(inputs, ["x"], ["y"])["y"]["x"]
    ours_rel = np.abs(np.diag(ours) - np.diag(want)) / np.diag(want)
    assert np.max(ours_rel) < 1e-6, ours_rel

    api = t._client.api_module
    core = core_jacobian(
        api.apply, api.InputSchema.model_validate(inputs), {"x"}, {"y"}
    )["y"]["x"]
    core_rel = np.abs(np.diag(core) - np.diag(want)) / np.diag(want)
    assert np.max(core_rel) > 1e-6, (
        core_rel
    )  # the absolute default step fails at 1e-6 (and 1e6)


def test_proxy_is_a_tesseract_and_defines_every_public_member():
    """Every public member of the installed Tesseract is the proxy's own.

    A member inherited unchanged would run tesseract-core's code on an object
    without a connection (``_client`` is ``None``); a tesseract-core release
    that adds one fails here, naming it.
    """
    from tesseract_core import Tesseract

    from tess_ad._proxy import FiniteDifferenceTesseract

    members = [n for n in dir(Tesseract) if not n.startswith("_")]
    members += ["__enter__", "__exit__", "__init__"]
    inherited = [
        n
        for n in members
        if inspect.getattr_static(FiniteDifferenceTesseract, n)
        is inspect.getattr_static(Tesseract, n)
    ]
    assert inherited == []
    assert issubclass(FiniteDifferenceTesseract, Tesseract)


def test_tesseract_members_reach_the_wrapped_tesseract(
    local_tesseract, served_tesseract
):
    from tesseract_core import Tesseract

    t = local_tesseract("rosenbrock")
    fd = tess_ad.with_finite_differences(t, method="forward")
    assert isinstance(fd, Tesseract)
    assert fd.health() == t.health()
    assert fd.server_capabilities is None  # in-process
    assert fd.current_encoding == t.current_encoding
    assert fd.resolve_gpu_transport() == t.resolve_gpu_transport()
    view = fd.with_encoding(gpu_transport="none")
    assert isinstance(view, Tesseract) and view.method == "forward"
    assert (
        view.wrapped is not t and "vector_jacobian_product" in view.available_endpoints
    )
    with fd as entered:
        assert entered is fd
    with pytest.raises(RuntimeError, match="Can only serve"):
        fd.serve()  # the wrapped Tesseract's own answer
    with pytest.raises(TypeError, match="wraps a Tesseract"):
        type(fd).from_url("http://127.0.0.1:1")
    served = served_tesseract("rosenbrock")
    fd_served = tess_ad.with_finite_differences(served)
    assert fd_served.health() == served.health()
    assert fd_served.server_capabilities == served.server_capabilities
    inputs = example_inputs("rosenbrock")
    args = {"inputs": inputs, "vjp_inputs": ["x"], "vjp_outputs": ["loss"]}
    ct = {"cotangent_vector": {"loss": np.float64(1.0)}}
    assert_trees_close(
        view.vector_jacobian_product(**args, **ct),
        fd.vector_jacobian_product(**args, **ct),
        rtol=0,
    )


def test_proxy_interface(local_tesseract):
    t = local_tesseract("nested")
    fd = tess_ad.with_finite_differences(t)
    for name in ("jacobian", "jacobian_vector_product", "vector_jacobian_product"):
        assert name in fd.available_endpoints
        assert tesseract_schema(fd).has(name)
    assert "apply" in fd.available_endpoints
    assert not hasattr(fd, "abstract_eval")  # the wrapped one has none
    assert fd.openapi_schema["components"] == t.openapi_schema["components"]
    rosen = tess_ad.with_finite_differences(local_tesseract("rosenbrock"))
    shapes = rosen.abstract_eval({"x": {"shape": [4], "dtype": "float64"}})
    assert tuple(shapes["residuals"]["shape"]) == (6,)
    inputs = example_inputs("nested")
    assert_trees_close(fd.apply(inputs), t.apply(inputs), rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "backward"}, ValueError, "'backward'"),
        ({"eps": 0.0}, ValueError, "positive"),
        ({"eps": -1e-4}, ValueError, "positive"),
        (
            {"eps": {"params.{alpha}": -1.0}},
            ValueError,
            re.escape("eps['params.{alpha}']"),
        ),
        ({"eps": {"config.offset": 1e-3}}, ValueError, "'config.offset'"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"executor": object()}, TypeError, "executor"),
        ({"cache": "/proc/no/such/dir"}, OSError, "cache directory"),
    ],
)
def test_bad_arguments_are_refused_before_any_call(local_tesseract, kwargs, exc, match):
    t = local_tesseract("nested")
    with Spy(t) as spy, pytest.raises(exc, match=match):
        tess_ad.with_finite_differences(t, **kwargs)
    assert sum(spy.calls.values()) == 0


def test_not_a_tesseract():
    with pytest.raises(TypeError, match="Tesseract"):
        tess_ad.with_finite_differences({"apply": 1})


@pytest.mark.parametrize(
    ("jac_inputs", "jac_outputs", "match"),
    [
        (["config.offset"], ["out"], "'config.offset' is not marked Differentiable"),
        (["params.{gamma}"], ["out"], re.escape("'params.{gamma}'")),
        (
            ["params.{alpha}"],
            ["info.label"],
            "'info.label' is not a Differentiable output",
        ),
        ("params.{alpha}", ["out"], "list of paths"),
    ],
)
def test_bad_paths_name_the_path(local_tesseract, jac_inputs, jac_outputs, match):
    t = local_tesseract("nested")
    fd = tess_ad.with_finite_differences(t)
    with Spy(t) as spy, pytest.raises((SchemaError, TypeError), match=match):
        fd.jacobian(example_inputs("nested"), jac_inputs, jac_outputs)
    assert spy.calls["apply"] == 0


def test_inputs_not_matching_schema(local_tesseract):
    fd = tess_ad.with_finite_differences(local_tesseract("rosenbrock"))
    with pytest.raises(SchemaError, match="'x'"):
        fd.jacobian({"x": "not an array"}, ["x"], ["loss"])


def test_progress_bar(local_tesseract, capsys):
    fd = tess_ad.with_finite_differences(local_tesseract("rosenbrock"), progress=True)
    fd.jacobian(example_inputs("rosenbrock"), ["x"], ["loss"])
    err = capsys.readouterr().err
    assert "8/8" in err and "jacobian" in err


def test_the_arrays_of_a_lazy_sequence_are_differentiable_leaves():
    """``list[Differentiable[Array]] | str`` given a list: ``items.[i]`` are leaves to differentiate."""
    from pathlib import Path

    from tesseract_core import Tesseract

    api = (
        Path(__file__).parent
        / "jax_adapter"
        / "tesseracts"
        / "sequence"
        / "tesseract_api.py"
    )
    fd = tess_ad.with_finite_differences(Tesseract.from_tesseract_api(str(api)))
    items = [np.array([1.0, 2.0]), np.array([3.0])]
    inputs = {"items": items, "shift": 0.5}
    jac = fd.jacobian(
        inputs, ["items.[0]", "items.[1]", "shift"], ["total", "scaled.[1]"]
    )
    expected = [2.0 * (i + 1) * (x + 0.5) for i, x in enumerate(items)]
    np.testing.assert_allclose(jac["total"]["items.[0]"], expected[0], rtol=1e-8)
    np.testing.assert_allclose(jac["total"]["items.[1]"], expected[1], rtol=1e-8)
    np.testing.assert_allclose(jac["total"]["shift"], 22.0, rtol=1e-8)
    np.testing.assert_allclose(jac["scaled.[1]"]["items.[1]"], [[2.0]], rtol=1e-8)
    np.testing.assert_allclose(
        jac["scaled.[1]"]["items.[0]"], np.zeros((1, 2)), atol=1e-8
    )
    vjp = fd.vector_jacobian_product(inputs, ["items.[1]"], ["total"], {"total": 1.0})
    np.testing.assert_allclose(vjp["items.[1]"], expected[1], rtol=1e-8)
