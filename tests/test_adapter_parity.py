"""JAX and PyTorch through tess_ad: the same Endpoints calls, the same client calls, the same bits.

Spies on ``tess_ad._endpoints.Endpoints`` and on the real client while
``jax.jacrev``/``jax.jacfwd`` and ``torch.func.jacrev``/``torch.func.jacfwd``
run on the same call, and counts the schema walks each call makes, so the
round trips (flatten, unflatten, flatten again) cannot come back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import Spy, assert_trees_close, load_forward_ad_decompositions
from test_endpoints import B, X, inputs, rosenbrock

import tess_ad
import tess_ad.jax
import tess_ad.torch
from tess_ad._endpoints import Endpoints


@pytest.fixture(autouse=True, scope="module")
def _quiet_forward_ad():
    load_forward_ad_decompositions()


# --------------------------------------------------------------------------
# JAX and PyTorch: the same Endpoints calls, the same client calls, the same bits
# --------------------------------------------------------------------------


class EndpointsSpy:
    """Records which ``Endpoints`` methods run, with their batch sizes."""

    METHODS = ("apply", "vjp", "jvp", "vjp_many", "jvp_many", "jacobian", "vjp_jvp")

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, int]] = []
        for name in self.METHODS:
            monkeypatch.setattr(
                Endpoints, name, self._wrap(name, getattr(Endpoints, name))
            )

    def _wrap(self, name, orig):
        def wrapper(ep, *args, **kwargs):
            vectors = args[3] if len(args) > 3 and name.endswith("_many") else None
            batch = len(next(iter(vectors.values()))) if vectors else 0
            self.calls.append((name, batch))
            return orig(ep, *args, **kwargs)

        return wrapper


def _jax_fn(t):
    return lambda x: tess_ad.jax.apply_tesseract(t, inputs(x))["residuals"]


def _torch_fn(t):
    return lambda x: tess_ad.torch.apply_tesseract(t, inputs(x))["residuals"]


@pytest.mark.parametrize("name", ["rosenbrock", "float32"])
@pytest.mark.parametrize("mode", ["jacrev", "jacfwd"])
def test_jax_and_torch_make_the_same_calls_and_bits(
    tesseract_factory, monkeypatch, name, mode
):
    t = tesseract_factory(name)
    if name == "rosenbrock":
        x, out, fixed = X, "residuals", {"a": 1.0, "b": B}
    else:
        x, out = np.array([0.1, 0.7, -1.3], np.float32), "y"
        fixed = {"w": np.float32(1.5), "shift": np.array([0.0, 0.5, -0.5], np.float32)}

    def jax_f(x):
        return tess_ad.jax.apply_tesseract(t, {"x": x, **fixed})[out]

    def torch_f(x):
        return tess_ad.torch.apply_tesseract(t, {"x": x, **fixed})[out]

    transform = {
        "jacrev": (jax.jacrev, torch.func.jacrev),
        "jacfwd": (jax.jacfwd, torch.func.jacfwd),
    }
    jax_t, torch_t = transform[mode]
    spy = EndpointsSpy(monkeypatch)
    with Spy(t) as client:
        jax_jac = np.asarray(jax_t(jax_f)(jnp.asarray(x)))
        jax_ep, jax_client = list(spy.calls), dict(client.calls)
        spy.calls.clear()
        client.reset()
        torch_jac = torch_t(torch_f)(torch.from_numpy(x.copy())).numpy()
        torch_ep, torch_client = list(spy.calls), dict(client.calls)
    assert jax_ep == torch_ep, (jax_ep, torch_ep)
    assert jax_client == torch_client, (jax_client, torch_client)
    many = "vjp_many" if mode == "jacrev" else "jvp_many"
    assert (
        many,
        x.size if mode == "jacfwd" else 6 if name == "rosenbrock" else 3,
    ) in jax_ep
    if name == "rosenbrock":  # has a jacobian endpoint: one call for the whole batch
        assert jax_client == {"apply": 1, "jacobian": 1}
    else:  # none: one call per row
        endpoint = (
            "vector_jacobian_product" if mode == "jacrev" else "jacobian_vector_product"
        )
        assert jax_client == {"apply": 1, endpoint: 3}
    assert jax_jac.dtype == torch_jac.dtype
    np.testing.assert_array_equal(jax_jac, torch_jac)  # bit-identical


def test_torch_jacrev_with_a_jacobian_endpoint_is_one_jacobian_call(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    _, _, jac = rosenbrock(X)
    with Spy(t) as spy:
        got = torch.func.jacrev(_torch_fn(t))(torch.tensor(X))
        assert dict(spy.calls) == {"apply": 1, "jacobian": 1}
    assert_trees_close(got.numpy(), jac, rtol=1e-13, atol=1e-12)


# --------------------------------------------------------------------------
# One pass per call: the schema walks each call makes
# --------------------------------------------------------------------------


class PassCounter:
    """Counts schema walks: flattens of inputs and of outputs, and unflattens."""

    def __init__(self, monkeypatch):
        self.counts = {"inputs": 0, "outputs": 0, "unflatten": 0}
        flatten, unflatten = tess_ad.TreeSchema.flatten, tess_ad.FlatTree.unflatten

        def counted_flatten(schema, *args, **kwargs):
            self.counts[schema.name] += 1
            return flatten(schema, *args, **kwargs)

        def counted_unflatten(flat, *args, **kwargs):
            self.counts["unflatten"] += 1
            return unflatten(flat, *args, **kwargs)

        monkeypatch.setattr(tess_ad.TreeSchema, "flatten", counted_flatten)
        monkeypatch.setattr(tess_ad.FlatTree, "unflatten", counted_unflatten)

    def take(self) -> dict[str, int]:
        counts = dict(self.counts)
        self.counts.update(dict.fromkeys(self.counts, 0))
        return counts


def test_schema_passes_per_call(local_tesseract, monkeypatch):
    """The round trips (flatten, unflatten, flatten again) cannot come back.

    Each call flattens its inputs once and the outputs of each ``apply`` once.
    An unflatten builds a nested tree that someone needs: the request of each
    endpoint call, and the outputs handed back to the user. An eager JAX
    ``apply`` converts its inputs in the same pass that flattens them, so the
    request costs no extra walk.
    """
    t = local_tesseract("rosenbrock")
    tess_ad.tesseract_schema(t)  # parsed once per client, not part of a call
    passes = PassCounter(monkeypatch)

    tess_ad.jax.apply_tesseract(t, inputs(jnp.asarray(X)))
    assert passes.take() == {"inputs": 1, "outputs": 1, "unflatten": 1}

    jax.grad(lambda x: tess_ad.jax.apply_tesseract(t, inputs(x))["loss"])(
        jnp.asarray(X)
    )
    # unflattens: the apply request, the outputs to the user, the VJP request
    assert passes.take() == {"inputs": 1, "outputs": 1, "unflatten": 3}

    x = torch.tensor(X, requires_grad=True)
    tess_ad.torch.apply_tesseract(t, inputs(x))["loss"].backward()
    # two: a plain backward sends the VJP the forward's request (the same NumPy
    # inputs, their tree already built); the outputs to the user
    assert passes.take() == {"inputs": 1, "outputs": 1, "unflatten": 2}
