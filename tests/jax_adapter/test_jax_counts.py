"""Endpoint calls per transformation, counted with Spy on the real clients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import Spy, example_inputs

import tess_ad
from tess_ad.jax import apply_tesseract

X = jnp.array([-1.2, 1.0, 0.5, 2.0])


def rosenbrock_loss(client, **kwargs):
    def f(x):
        return apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0}, **kwargs)["loss"]

    return f


def nonzero(calls):
    return {k: v for k, v in calls.items() if v}


@pytest.mark.parametrize("kind", ["local", "served"])
def test_eager_grad_is_one_apply_and_one_vjp(tesseract_factory, kind):
    client = tesseract_factory("rosenbrock")
    with Spy(client) as spy:
        jax.grad(rosenbrock_loss(client))(X)
    assert nonzero(spy.calls) == {"apply": 1, "vector_jacobian_product": 1}


def test_repeated_jit_grad_traces_once_and_calls_one_vjp_per_call(local_tesseract):
    client = local_tesseract("rosenbrock")
    traces = []

    def f(x):
        traces.append(1)
        return rosenbrock_loss(client)(x)

    grad = jax.jit(jax.grad(f))
    with Spy(client) as spy:
        for k in range(4):
            grad(X + 0.1 * k)
    assert len(traces) == 1
    # at trace time only: once, or not at all when an identical call was traced
    # before (under jit identical calls share one TesseractCall and its spec)
    assert spy.calls["abstract_eval"] <= 1
    assert spy.calls["vector_jacobian_product"] == 4
    # The forward apply is unused by grad; XLA may drop the pure callback.
    assert spy.calls["apply"] <= 4
    assert set(nonzero(spy.calls)) <= {
        "abstract_eval",
        "vector_jacobian_product",
        "apply",
    }


TRANSFORMS = {
    "grad": jax.grad,
    "value_and_grad": jax.value_and_grad,
    "jacrev": jax.jacrev,
    "jacfwd": jax.jacfwd,
    "hessian": jax.hessian,
    "jvp": lambda f: lambda x: jax.jvp(f, (x,), (jnp.arange(4.0),)),
    "linearize": lambda f: lambda x: jax.linearize(f, x)[1](jnp.arange(4.0)),
    "vmap": lambda f: lambda x: jax.vmap(f)(jnp.stack([x, 2 * x])),
    "vmap(grad)": lambda f: lambda x: jax.vmap(jax.grad(f))(jnp.stack([x, 2 * x])),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_repeated_jit_does_not_retrace(local_tesseract, name):
    """Later calls with the same shapes reuse the trace: no new trace, no abstract_eval."""
    client = local_tesseract("rosenbrock")
    traces = []

    def f(x):
        traces.append(1)
        return rosenbrock_loss(client)(x)

    g = jax.jit(TRANSFORMS[name](f))
    g(X)
    n_traces = len(traces)
    with Spy(client) as spy:
        for k in range(1, 4):
            got = g(X + 0.1 * k)
    assert len(traces) == n_traces
    assert spy.calls["abstract_eval"] == 0
    want = TRANSFORMS[name](rosenbrock_loss(client))(X + 0.3)  # eager
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-10, err_msg=name
        )


def test_repeated_jit_value_and_grad_is_one_apply_and_one_vjp_per_call(local_tesseract):
    client = local_tesseract("rosenbrock")
    vg = jax.jit(jax.value_and_grad(rosenbrock_loss(client)))
    vg(X)
    with Spy(client) as spy:
        for k in range(3):
            vg(X + 0.1 * k)
    assert nonzero(spy.calls) == {"apply": 3, "vector_jacobian_product": 3}


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_vmap_is_one_apply_per_element(local_tesseract, mode):
    client = local_tesseract("rosenbrock")
    f = jax.vmap(rosenbrock_loss(client))
    f = jax.jit(f) if mode == "jit" else f
    xs = jnp.stack([X + k for k in range(5)])
    with Spy(client) as spy:
        out = f(xs)
    assert out.shape == (5,)
    assert spy.calls["apply"] == 5
    # under jit the shapes come from abstract_eval at trace time, unless an
    # identical call traced before already knows them (shared TesseractCall)
    assert spy.calls["abstract_eval"] <= (1 if mode == "jit" else 0)
    assert nonzero(spy.calls).keys() <= {"apply", "abstract_eval"}


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_vmap_grad_is_one_vjp_per_element(local_tesseract, mode):
    client = local_tesseract("rosenbrock")
    f = jax.vmap(jax.grad(rosenbrock_loss(client)))
    f = jax.jit(f) if mode == "jit" else f
    xs = jnp.stack([X + k for k in range(3)])
    with Spy(client) as spy:
        f(xs)
    assert spy.calls["vector_jacobian_product"] == 3
    assert spy.calls["apply"] <= 3
    assert spy.calls["jacobian"] == spy.calls["jacobian_vector_product"] == 0


def test_eager_jvp_and_linearize_use_the_jvp_endpoint(local_tesseract):
    client = local_tesseract("rosenbrock")
    f = rosenbrock_loss(client)
    with Spy(client) as spy:
        jax.jvp(f, (X,), (jnp.ones(4),))
    assert nonzero(spy.calls) == {"apply": 1, "jacobian_vector_product": 1}
    with Spy(client) as spy:
        _, lin = jax.linearize(f, X)
        lin(jnp.ones(4))
        lin(jnp.arange(4.0))
    assert nonzero(spy.calls) == {"apply": 1, "jacobian_vector_product": 2}


@pytest.mark.parametrize("transform", [jax.jacfwd, jax.jacrev])
def test_whole_jacobian_is_one_jacobian_call(local_tesseract, transform):
    client = local_tesseract("rosenbrock")

    def f(x):
        return apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["residuals"]

    with Spy(client) as spy:
        jac = transform(f)(X)
    assert jac.shape == (6, 4)
    assert nonzero(spy.calls) == {"apply": 1, "jacobian": 1}


def test_materialize_jacobian_false_uses_one_vjp_per_row(local_tesseract):
    client = local_tesseract("rosenbrock")

    def f(x):
        return apply_tesseract(
            client, {"x": x, "a": 1.0, "b": 100.0}, materialize_jacobian=False
        )["residuals"]

    with Spy(client) as spy:
        jax.jacrev(f)(X)
    assert nonzero(spy.calls) == {"apply": 1, "vector_jacobian_product": 6}


def test_jacfwd_without_jacobian_endpoint_is_one_jvp_per_input_element(local_tesseract):
    client = local_tesseract("float32")
    shift = np.zeros(3, np.float32)

    def f(x):
        return apply_tesseract(client, {"x": x, "w": np.float32(2.0), "shift": shift})[
            "y"
        ]

    with Spy(client) as spy:
        jac = jax.jacfwd(f)(jnp.ones(3, jnp.float32))
    assert jac.dtype == jnp.float32
    assert nonzero(spy.calls) == {"apply": 1, "jacobian_vector_product": 3}


def test_jit_hessian_is_two_vjps_per_direction(local_tesseract):
    client = local_tesseract("rosenbrock")
    hess = jax.jit(jax.hessian(rosenbrock_loss(client)))
    hess(X)
    with Spy(client) as spy:
        H = hess(X + 0.5)
    assert H.shape == (4, 4)
    assert spy.calls["vector_jacobian_product"] == 2 * 4
    assert spy.calls["jacobian_vector_product"] == 0
    assert spy.calls["apply"] <= 1 and spy.calls["jacobian"] <= 1


def test_fd_grad_costs_one_apply_plus_central_differences(local_tesseract):
    raw = local_tesseract("nested")
    fd = tess_ad.with_finite_differences(raw)
    inputs = example_inputs("nested")
    params = {k: jnp.asarray(v) for k, v in inputs["params"].items()}

    def f(p):
        return apply_tesseract(fd, dict(inputs, params=p))["summary"]["sumsq"]

    with Spy(raw) as spy:
        jax.grad(f)(params)
    n = sum(v.size for v in params.values())
    assert nonzero(spy.calls) == {"apply": 1 + 2 * n}
