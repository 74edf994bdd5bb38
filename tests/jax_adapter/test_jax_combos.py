"""Nested combinations of transformations (beyond the one-transformation matrix)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import Spy, assert_trees_close
from jax_adapter_refs import rosenbrock_ref

from tess_ad.jax import apply_tesseract

XS = jnp.array([[-1.2, 1.0, 0.5, 2.0], [0.3, 0.2, -0.4, 1.1], [1.0, 1.0, 1.0, 1.0]])


def loss(client):
    return lambda x: apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]


def residuals(client):
    return lambda x: apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})[
        "residuals"
    ]


def ref_loss(x):
    return rosenbrock_ref({"x": x, "a": 1.0, "b": 100.0})["loss"]


def ref_residuals(x):
    return rosenbrock_ref({"x": x, "a": 1.0, "b": 100.0})["residuals"]


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(
    ("name", "make", "ref", "rtol", "atol"),
    [
        (
            "vmap_hessian",
            lambda c: jax.vmap(jax.hessian(loss(c))),
            jax.vmap(jax.hessian(ref_loss)),
            1e-8,
            1e-7,
        ),
        (
            "jacrev_jacrev",
            lambda c: jax.vmap(jax.jacrev(jax.jacrev(loss(c)))),
            jax.vmap(jax.hessian(ref_loss)),
            1e-8,
            1e-7,
        ),
        (
            "vmap_jacrev",
            lambda c: jax.vmap(jax.jacrev(residuals(c))),
            jax.vmap(jax.jacrev(ref_residuals)),
            1e-13,
            1e-12,
        ),
        (
            "vmap_jacfwd",
            lambda c: jax.vmap(jax.jacfwd(residuals(c))),
            jax.vmap(jax.jacfwd(ref_residuals)),
            1e-13,
            1e-12,
        ),
        (
            "grad_of_vmap",
            lambda c: jax.grad(lambda xs: jnp.sum(jax.vmap(loss(c))(xs))),
            jax.grad(lambda xs: jnp.sum(jax.vmap(ref_loss)(xs))),
            1e-13,
            1e-12,
        ),
        (
            "jacrev_of_vmap_sum",
            lambda c: jax.jacrev(lambda xs: jax.vmap(residuals(c))(xs).sum(0)),
            jax.jacrev(lambda xs: jax.vmap(ref_residuals)(xs).sum(0)),
            1e-13,
            1e-12,
        ),
        (
            "hvp_fwd_over_rev",
            lambda c: jax.vmap(
                lambda x: jax.jvp(jax.grad(loss(c)), (x,), (jnp.ones(4),))[1]
            ),
            jax.vmap(lambda x: jax.jvp(jax.grad(ref_loss), (x,), (jnp.ones(4),))[1]),
            1e-8,
            1e-7,
        ),
    ],
)
def test_combination_matches_reference(
    local_tesseract, mode, name, make, ref, rtol, atol
):
    fn = make(local_tesseract("rosenbrock"))
    got = (jax.jit(fn) if mode == "jit" else fn)(XS)
    assert_trees_close(got, ref(XS), rtol=rtol, atol=atol)


def test_vmap_of_jacrev_takes_one_jacobian_per_point(local_tesseract):
    client = local_tesseract("rosenbrock")
    with Spy(client) as spy:
        jax.jit(jax.vmap(jax.jacrev(residuals(client))))(XS)
    assert spy.calls["jacobian"] == 3
    assert spy.calls["vector_jacobian_product"] == 0


def test_served_jit_vmap_grad(served_tesseract):
    client = served_tesseract("rosenbrock")
    got = jax.jit(jax.vmap(jax.grad(loss(client))))(XS)
    np.testing.assert_allclose(got, jax.vmap(jax.grad(ref_loss))(XS), rtol=1e-13)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_nested_vmap_of_cotangents_folds_into_one_jacobian(local_tesseract, mode):
    client = local_tesseract("rosenbrock")
    x = XS[0]
    cts = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 6)))

    def pullback_all(cts):
        _, pull = jax.vjp(residuals(client), x)
        return jax.vmap(jax.vmap(pull))(cts)

    with Spy(client) as spy:
        (got,) = (jax.jit(pullback_all) if mode == "jit" else pullback_all)(cts)
    _, pull_ref = jax.vjp(ref_residuals, x)
    (want,) = jax.vmap(jax.vmap(pull_ref))(cts)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12)
    assert spy.calls["jacobian"] == 1
    assert spy.calls["vector_jacobian_product"] == 0


def test_check_grads_first_order_both_modes_and_second_order_reverse(local_tesseract):
    """jax.test_util.check_grads against JAX's own numerical differences."""
    from jax.test_util import check_grads

    client = local_tesseract("rosenbrock")
    check_grads(residuals(client), (XS[0],), order=1, modes=["fwd", "rev"])
    check_grads(residuals(client), (XS[0],), order=2, modes=["rev"])


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_checkpoint_and_scan_bodies(local_tesseract, mode):
    client = local_tesseract("rosenbrock")
    f = loss(client)

    def descent(x):
        def body(c, _):
            return c - 1e-4 * jax.grad(jax.checkpoint(f))(c), f(c)

        return jax.lax.scan(body, x, None, length=3)

    def descent_ref(x):
        def body(c, _):
            return c - 1e-4 * jax.grad(ref_loss)(c), ref_loss(c)

        return jax.lax.scan(body, x, None, length=3)

    got = (jax.jit(descent) if mode == "jit" else descent)(XS[0])
    assert_trees_close(got, descent_ref(XS[0]), rtol=1e-13, atol=1e-12)
