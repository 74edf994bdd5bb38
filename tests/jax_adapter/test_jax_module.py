"""TesseractModule inside an equinox model, through filter_jit and filter_grad."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from helpers import Spy, assert_trees_close, example_inputs
from jax_adapter_refs import nested_ref, rosenbrock_ref

import tess_ad
from tess_ad.jax import TesseractModule


class Scaled(eqx.Module):
    """A tiny model: a learnable scale in front of the Rosenbrock Tesseract."""

    tess: TesseractModule
    scale: jax.Array

    def __call__(self, x):
        return self.tess({"x": self.scale * x, "a": 1.0, "b": 100.0})["loss"]


def test_filter_grad_and_filter_jit_through_a_model(local_tesseract):
    client = local_tesseract("rosenbrock")
    model = Scaled(TesseractModule(client), jnp.array(1.5))
    x = jnp.array([-1.2, 1.0, 0.5, 2.0])
    traces = []

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(m, x):
        traces.append(1)
        return m(x)

    with Spy(client) as spy:
        g1 = grad(model, x)
        g2 = grad(model, x + 0.1)
    assert len(traces) == 1
    assert spy.calls["vector_jacobian_product"] == 2
    assert jax.tree.leaves(g1.tess) == []  # the client is static, no gradient leaf

    def ref(scale, x):
        return rosenbrock_ref({"x": scale * x, "a": 1.0, "b": 100.0})["loss"]

    np.testing.assert_allclose(g1.scale, jax.grad(ref)(1.5, x), rtol=1e-13)
    np.testing.assert_allclose(g2.scale, jax.grad(ref)(1.5, x + 0.1), rtol=1e-13)


def test_module_with_fd_proxy_and_nested_inputs(local_tesseract):
    fd = tess_ad.with_finite_differences(local_tesseract("nested"))
    layer = TesseractModule(fd)
    inputs = example_inputs("nested")
    params = {k: jnp.asarray(v) for k, v in inputs["params"].items()}

    def loss(p):
        return layer(dict(inputs, params=p))["summary"]["sumsq"]

    got = eqx.filter_grad(loss)(params)
    want = jax.grad(lambda p: nested_ref(dict(inputs, params=p))["summary"]["sumsq"])(
        params
    )
    assert_trees_close(got, want, rtol=1e-8, atol=5e-9)


def test_modules_compare_by_client():
    a, b = object(), object()
    assert TesseractModule(a) == TesseractModule(a)
    assert TesseractModule(a) != TesseractModule(b)
    assert hash(TesseractModule(a)) == hash(TesseractModule(a))
