"""Where output shapes come from under jit, and what non-array outputs become."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import Spy, example_api, example_inputs
from jax_adapter_refs import TESSERACTS, nested_ref

import tess_ad
from tess_ad.jax import apply_tesseract


def test_abstract_eval_gives_shapes_once_per_trace(local_tesseract):
    client = local_tesseract("rosenbrock")
    f = jax.jit(lambda x: apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0}))
    with Spy(client) as spy:
        for n in (3, 3, 5):
            out = f(jnp.ones(n))
            assert out["residuals"].shape == (2 * (n - 1),)
    assert spy.calls["abstract_eval"] == 2  # one per input shape
    assert spy.calls["apply"] == 3


def test_fixed_output_schema_needs_no_abstract_eval_nor_eager_call():
    from tesseract_core import Tesseract

    client = Tesseract.from_tesseract_api(
        str(TESSERACTS / "fixed_shapes" / "tesseract_api.py")
    )
    assert "abstract_eval" not in client.available_endpoints
    x = jnp.array([1.0, 2.0, 3.0])
    out = jax.jit(lambda x: apply_tesseract(client, {"x": x, "scale": 2.0}))(x)
    np.testing.assert_array_equal(out["y"], 2.0 * x**2)
    assert out["total"] == 28.0
    assert out["note"] is None  # strings cannot be traced
    assert out["count"].dtype == jnp.int64 and int(out["count"]) == 3
    eager = apply_tesseract(client, {"x": x, "scale": 2.0})
    assert (
        eager["note"] == "fixed" and eager["count"] == 3 and type(eager["count"]) is int
    )


def test_recorded_shapes_match_traced_scalars():
    """A record from an eager call serves a jit in which a float config field is traced."""
    from tesseract_core import Tesseract

    client = Tesseract.from_tesseract_api(
        str(example_api("nested"))
    )  # fresh: no records
    inputs = example_inputs("nested")
    apply_tesseract(client, inputs)  # records the output shapes (offset=0.25 known)

    def f(params, offset):
        config = dict(
            inputs["config"], offset=offset
        )  # a Python float field, traced by jit
        return apply_tesseract(client, dict(inputs, params=params, config=config))[
            "out"
        ]

    params = {k: jnp.asarray(v) for k, v in inputs["params"].items()}
    got = jax.jit(f)(params, 1.5)
    want = nested_ref(dict(inputs, config=dict(inputs["config"], offset=1.5)))["out"]
    np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_non_array_outputs(local_tesseract, mode):
    client = local_tesseract("nested")
    inputs = example_inputs("nested")
    params = {k: jnp.asarray(v) for k, v in inputs["params"].items()}
    apply_tesseract(client, inputs)
    f = lambda p: apply_tesseract(client, dict(inputs, params=p))  # noqa: E731
    out = (jax.jit(f) if mode == "jit" else f)(params)
    assert out["info"]["positive"].dtype == jnp.bool_
    np.testing.assert_array_equal(out["info"]["positive"], np.asarray(out["out"]) > 0)
    if mode == "eager":
        assert out["info"]["label"] == "demo"
        assert out["info"]["n_layers"] == 2 and type(out["info"]["n_layers"]) is int
    else:
        assert out["info"]["label"] is None
        assert (
            isinstance(out["info"]["n_layers"], jax.Array)
            and int(out["info"]["n_layers"]) == 2
        )


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_integer_and_boolean_outputs_have_zero_derivative(local_tesseract, mode):
    """Piecewise-constant outputs: zero is their true derivative, as JAX says for integers.

    (A non-differentiable *float* output is another matter: see
    test_jax_nondiff_outputs.py.)
    """
    fd = tess_ad.with_finite_differences(local_tesseract("nested"))
    inputs = example_inputs("nested")
    params = {k: jnp.asarray(v) for k, v in inputs["params"].items()}
    apply_tesseract(fd, inputs)

    def f(p):
        out = apply_tesseract(fd, dict(inputs, params=p))
        return (
            jnp.sum(out["info"]["positive"].astype(jnp.float64))
            + out["info"]["n_layers"]
        )

    value, grads = (
        jax.jit(jax.value_and_grad(f)) if mode == "jit" else jax.value_and_grad(f)
    )(params)
    assert float(value) == 3.0
    for g in jax.tree.leaves(grads):
        np.testing.assert_array_equal(g, 0.0)


def test_eager_grad_keeps_string_outputs_in_aux(local_tesseract):
    """Eagerly the Tesseract really runs, so even under grad its strings come back."""
    fd = tess_ad.with_finite_differences(local_tesseract("nested"))
    inputs = example_inputs("nested")

    def f(p):
        out = apply_tesseract(fd, dict(inputs, params=p))
        return out["summary"]["sumsq"], out["info"]["label"]

    params = {k: jnp.asarray(v) for k, v in inputs["params"].items()}
    _, label = jax.grad(f, has_aux=True)(params)
    assert label == "demo"
