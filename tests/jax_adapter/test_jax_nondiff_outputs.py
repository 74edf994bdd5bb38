"""Outputs not marked Differentiable: an unknown derivative, never a silent zero.

The ``metadata`` Tesseract returns ``z = x * y`` (differentiable) and
``metadata = x[:2] + y[:2]`` (not marked, though its true derivative is not
zero). As in tesseract-jax, forward mode gives ``metadata`` a NaN tangent and
reverse mode refuses a loss that uses it, naming the output and the fixes; a
loss that leaves it out (or stops its gradient) costs what it always did.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import Spy

from tess_ad.jax import apply_tesseract

X = jnp.array([1.0, 2.0, 3.0])
Y = jnp.array([-0.5, 4.0, 0.25])
MODES = ["eager", "jit"]
KINDS = ["local", "served"]


@pytest.fixture
def client(request, test_tesseract, served_test_tesseract):
    kind = request.param
    return (
        test_tesseract("metadata")
        if kind == "local"
        else served_test_tesseract("metadata")
    )


def _run(fn, mode, *args):
    return (jax.jit(fn) if mode == "jit" else fn)(*args)


def _argument(spy, endpoint, name, position):
    """An argument of the first recorded call, passed by keyword or by position."""
    args, kwargs = spy.args[endpoint][0]
    return kwargs[name] if name in kwargs else args[position]


def _outputs(client):
    return lambda x, y: apply_tesseract(client, {"x": x, "y": y})


@pytest.mark.parametrize("client", KINDS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_jvp_gives_nan_for_the_non_differentiable_output(client, mode):
    tx, ty = jnp.array([1.0, 0.0, 2.0]), jnp.array([0.5, 1.0, -1.0])
    with Spy(client) as spy:
        out, tangents = _run(
            lambda *a: jax.jvp(_outputs(client), a[:2], a[2:]), mode, X, Y, tx, ty
        )
    np.testing.assert_array_equal(out["metadata"], X[:2] + Y[:2])
    np.testing.assert_allclose(tangents["z"], Y * tx + X * ty, rtol=1e-15)
    assert tangents["metadata"].shape == (2,)
    assert np.isnan(np.asarray(tangents["metadata"])).all()
    # the endpoint was asked for the differentiable output only, once
    assert spy.calls["jacobian_vector_product"] == 1
    assert set(_argument(spy, "jacobian_vector_product", "jvp_outputs", 2)) == {"z"}


@pytest.mark.parametrize("client", ["local"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_jacfwd_rows_of_the_non_differentiable_output_are_unknown(client, mode):
    jac = _run(jax.jacfwd(lambda x: _outputs(client)(x, Y)), mode, X)
    np.testing.assert_allclose(jac["z"], np.diag(Y), rtol=1e-15)
    assert jac["metadata"].shape == (2, 3)
    assert np.isnan(np.asarray(jac["metadata"])).all()


@pytest.mark.parametrize("client", KINDS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_grad_of_a_loss_using_it_names_the_output(client, mode):
    def loss(x, y):
        out = _outputs(client)(x, y)
        return jnp.sum(out["z"]) + jnp.sum(out["metadata"] ** 2)

    with Spy(client) as spy, pytest.raises(ValueError, match="'metadata'") as err:
        _run(jax.grad(loss), mode, X, Y)
    message = str(err.value)
    assert "does not mark Differentiable" in message
    assert "jax.lax.stop_gradient" in message
    assert "Differentiable[...]" in message
    assert spy.calls["vector_jacobian_product"] == 0


@pytest.mark.parametrize("client", KINDS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_any_concrete_cotangent_on_it_is_refused_even_zeros(client, mode):
    """tesseract-jax's rule: only a symbolic zero passes, not jnp.zeros."""

    def pull(x, y, ct_z, ct_meta):
        _, vjp = jax.vjp(_outputs(client), x, y)
        return vjp({"z": ct_z, "metadata": ct_meta})

    for ct_meta in (jnp.zeros(2), jnp.ones(2)):
        with pytest.raises(ValueError, match=r"(?i)non-symbolic-zero cotangent"):
            _run(pull, mode, X, Y, jnp.ones(3), ct_meta)


@pytest.mark.parametrize("client", KINDS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_stop_gradient_on_it_is_the_fix(client, mode):
    def loss(x, y):
        out = _outputs(client)(x, y)
        meta = jax.lax.stop_gradient(out["metadata"])
        return jnp.sum(out["z"] * 2.0) + jnp.sum(meta**2)

    gx, gy = _run(jax.grad(loss, argnums=(0, 1)), mode, X, Y)
    np.testing.assert_allclose(gx, 2.0 * Y, rtol=1e-15)
    np.testing.assert_allclose(gy, 2.0 * X, rtol=1e-15)


@pytest.mark.parametrize("client", KINDS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_grad_of_a_loss_not_using_it_costs_one_vjp(client, mode):
    def loss(x, y):
        return jnp.sum(_outputs(client)(x, y)["z"] ** 2)

    f = jax.grad(loss, argnums=(0, 1))
    if mode == "jit":
        f = jax.jit(f)
        f(X, Y)  # trace and compile (abstract_eval) outside the count
    with Spy(client) as spy:
        gx, gy = f(X, Y)
    z = X * Y
    np.testing.assert_allclose(gx, 2.0 * z * Y, rtol=1e-15)
    np.testing.assert_allclose(gy, 2.0 * z * X, rtol=1e-15)
    assert spy.calls["vector_jacobian_product"] == 1
    assert set(_argument(spy, "vector_jacobian_product", "vjp_outputs", 2)) == {"z"}
    assert spy.calls["jacobian_vector_product"] == 0
    assert spy.calls["apply"] == 1  # z is needed for the cotangent 2 z
