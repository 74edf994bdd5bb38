"""``sow``/``save_intermediates``: the values inside a chain of two Tesseract calls.

The chain is ``x -> residuals of rosenbrock(x) -> loss of rosenbrock(residuals)``
with the residuals sown; every collected value is compared with the same chain
written in ``jax.numpy`` (the cotangent of the residuals is the gradient of
the second loss at them, their tangent the JVP of the first call).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import Spy
from jax_adapter_refs import maybe_jit, rosenbrock_ref

from tess_ad.jax import apply_tesseract, save_intermediates, sow

X = jnp.array([-1.2, 1.0, 0.5])
V = jnp.array([1.0, -0.5, 2.0])


def chain(client):
    def f(x):
        first = apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})
        r = sow(first["residuals"], "residuals")
        return apply_tesseract(client, {"x": r, "a": 1.0, "b": 100.0})["loss"]

    return f


def residuals(x):
    return rosenbrock_ref({"x": x, "a": 1.0, "b": 100.0})["residuals"]


def second_loss(r):
    return rosenbrock_ref({"x": r, "a": 1.0, "b": 100.0})["loss"]


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_primal(tesseract_factory, mode):
    client = tesseract_factory("rosenbrock")
    out, seen = save_intermediates(maybe_jit(chain(client), mode))(X)
    np.testing.assert_allclose(out, second_loss(residuals(X)), rtol=1e-13)
    assert list(seen) == ["residuals"] and list(seen["residuals"]) == ["primal"]
    np.testing.assert_allclose(seen["residuals"]["primal"], residuals(X), rtol=1e-14)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_grad_collects_the_cotangent_that_reaches_the_value(tesseract_factory, mode):
    client = tesseract_factory("rosenbrock")
    with Spy(client) as spy:
        grad, seen = save_intermediates(maybe_jit(jax.grad(chain(client)), mode))(X)
    r = residuals(X)
    np.testing.assert_allclose(
        grad, jax.grad(lambda x: second_loss(residuals(x)))(X), rtol=1e-12
    )
    np.testing.assert_allclose(seen["residuals"]["primal"], r, rtol=1e-14)
    np.testing.assert_allclose(
        seen["residuals"]["cotangent"], jax.grad(second_loss)(r), rtol=1e-12
    )
    assert "tangent" not in seen["residuals"]
    assert spy.calls["vector_jacobian_product"] == 2  # sow costs no Tesseract call


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_jvp_collects_the_tangent(tesseract_factory, mode):
    client = tesseract_factory("rosenbrock")
    jvp = maybe_jit(lambda x, v: jax.jvp(chain(client), (x,), (v,)), mode)
    (_, tangent_out), seen = save_intermediates(jvp)(X, V)
    _, expected = jax.jvp(residuals, (X,), (V,))
    np.testing.assert_allclose(seen["residuals"]["tangent"], expected, rtol=1e-12)
    np.testing.assert_allclose(
        tangent_out,
        jax.jvp(lambda x: second_loss(residuals(x)), (X,), (V,))[1],
        rtol=1e-12,
    )


def test_pytrees_loops_tags_and_duplicates():
    def f(x):
        tree = sow({"a": x, "b": (2.0 * x, 3.0 * x)}, "tree")
        other = sow(x, "other", tag="elsewhere")

        def body(c, _):
            return sow(c * 2.0, "loop"), None

        return jax.lax.scan(body, tree["a"], None, length=3)[0].sum() + other.sum()

    _, seen = save_intermediates(jax.jit(f))(X)
    assert set(seen) == {"tree", "loop"}  # "other" has another tag
    np.testing.assert_allclose(seen["tree"]["primal"]["b"][1], 3.0 * X)
    # a sow reached three times stacks its values
    np.testing.assert_allclose(
        seen["loop"]["primal"], jnp.stack([2.0 * X, 4.0 * X, 8.0 * X])
    )
    _, only = save_intermediates(f, tag="elsewhere")(X)
    assert list(only) == ["other"]

    def twice(x):
        return sow(x, "same").sum() + sow(2.0 * x, "same").sum()

    with pytest.raises(ValueError, match="'same'"):
        save_intermediates(twice)(X)


def test_outside_save_intermediates_sow_is_the_identity():
    f = jax.jit(lambda x: sow(x * 2.0, "y").sum())
    np.testing.assert_allclose(f(X), 2.0 * X.sum())
    # the same compiled function reports into a later save_intermediates
    _, seen = save_intermediates(f)(X)
    np.testing.assert_allclose(seen["y"]["primal"], 2.0 * X)
