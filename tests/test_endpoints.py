"""tess_ad._endpoints.Endpoints: the one place every derivative number is made.

The "same numbers in JAX and PyTorch" claim rests on this module: both
adapters hand flat NumPy trees to ``Endpoints`` and never compute a
derivative themselves. These tests check its routes against analytic values
(rosenbrock's formulas, written in NumPy here), and spy on ``Endpoints`` and
on the real client while ``jax.jacrev``/``jax.jacfwd`` and
``torch.func.jacrev``/``torch.func.jacfwd`` run on the same call: the same
``Endpoints`` methods, the same endpoint calls, bit-identical results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import (
    Spy,
    assert_trees_close,
    example_inputs,
    load_forward_ad_decompositions,
)

import tess_ad
import tess_ad.jax
import tess_ad.torch
from tess_ad._endpoints import Endpoints

X = np.array([-1.2, 1.0, 0.5, 2.0])


@pytest.fixture(autouse=True, scope="module")
def _quiet_forward_ad():
    load_forward_ad_decompositions()


B = 100.0


def rosenbrock(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, residuals and d residuals / dx of examples/rosenbrock (a = 1)."""
    r = np.concatenate([1.0 - x[:-1], np.sqrt(B) * (x[1:] - x[:-1] ** 2)])
    n = x.size
    jac = np.zeros((2 * (n - 1), n))
    for i in range(n - 1):
        jac[i, i] = -1.0
        jac[n - 1 + i, i] = -2.0 * np.sqrt(B) * x[i]
        jac[n - 1 + i, i + 1] = np.sqrt(B)
    return float(r @ r), r, jac


def inputs(x: np.ndarray = X) -> dict:
    return {"x": x, "a": 1.0, "b": B}


# --------------------------------------------------------------------------
# Routes, against analytic values
# --------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["auto", "jacobian", "vjp", "jvp"])
def test_every_jacobian_route_is_the_analytic_jacobian(tesseract_factory, route):
    t = tesseract_factory("rosenbrock")
    _, r, jac = rosenbrock(X)
    got = Endpoints(t).jacobian(inputs(), ["x"], ["residuals", "loss"], route=route)
    np.testing.assert_allclose(got["residuals"]["x"], jac, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(got["loss"]["x"], 2 * r @ jac, rtol=1e-13)


def test_vjp_many_is_one_jacobian_call_or_one_vjp_per_row(local_tesseract):
    t = local_tesseract("rosenbrock")  # has a jacobian endpoint
    _, _, jac = rosenbrock(X)
    rows = np.random.default_rng(0).normal(size=(5, 6))
    ep = Endpoints(t)
    with Spy(t) as spy:
        auto = ep.vjp_many(inputs(), ["x"], ["residuals"], {"residuals": rows})
        assert dict(spy.calls) == {"jacobian": 1}
        spy.reset()
        per_row = ep.vjp_many(
            inputs(), ["x"], ["residuals"], {"residuals": rows}, use_jacobian=False
        )
        assert dict(spy.calls) == {"vector_jacobian_product": 5}
        spy.reset()
        # one row is one VJP call, never dearer than a whole Jacobian
        ep.vjp_many(inputs(), ["x"], ["residuals"], {"residuals": rows[:1]})
        assert dict(spy.calls) == {"vector_jacobian_product": 1}
    np.testing.assert_allclose(auto["x"], rows @ jac, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(per_row["x"], rows @ jac, rtol=1e-13, atol=1e-12)


def test_jvp_many_without_a_jacobian_endpoint_is_one_jvp_per_row(local_tesseract):
    t = local_tesseract("float32")  # VJP and JVP endpoints, no jacobian
    x = np.array([0.1, 0.7, -1.3], np.float32)
    w = np.float32(1.5)
    tangents = np.eye(3, dtype=np.float32)
    ep = Endpoints(t)
    with Spy(t) as spy:
        got = ep.jvp_many(
            {"x": x, "w": w, "shift": np.zeros(3, np.float32)},
            ["x"],
            ["y"],
            {"x": tangents},
            {"y": (3,)},
        )
        assert dict(spy.calls) == {"jacobian_vector_product": 3}
        spy.reset()
        forced = ep.jvp_many(
            {"x": x, "w": w, "shift": np.zeros(3, np.float32)},
            ["x"],
            ["y"],
            {"x": tangents},
            {"y": (3,)},
            use_jacobian=True,
        )
        # no jacobian endpoint: the whole Jacobian is built from VJP rows (3 outputs)
        # or JVP columns (3 inputs), whichever is fewer; rows win ties
        assert dict(spy.calls) == {"vector_jacobian_product": 3}
    assert got["y"].dtype == np.float32 and forced["y"].dtype == np.float32
    np.testing.assert_allclose(got["y"], np.diag(w * np.cos(x)), rtol=1e-6)
    np.testing.assert_allclose(forced["y"], got["y"], rtol=1e-6)


def test_zero_vectors_cost_no_call_and_are_not_requested(local_tesseract):
    t = local_tesseract("rosenbrock")
    ep = Endpoints(t)
    with Spy(t) as spy:
        g = ep.vjp(
            inputs(),
            ["x"],
            ["loss", "residuals"],
            {"loss": 0.0, "residuals": np.zeros(6)},
        )
        assert dict(spy.calls) == {}
        np.testing.assert_array_equal(g["x"], np.zeros(4))
        ep.vjp(
            inputs(),
            ["x"],
            ["loss", "residuals"],
            {"loss": 1.0, "residuals": np.zeros(6)},
        )
        ((args, _),) = spy.args["vector_jacobian_product"]
        assert list(args[2]) == ["loss"]  # the all-zero cotangent is dropped
        spy.reset()
        out = ep.jvp(
            inputs(), ["x"], ["residuals"], {"x": np.zeros(4)}, {"residuals": (6,)}
        )
        assert dict(spy.calls) == {}
        assert out["residuals"].shape == (6,) and not out["residuals"].any()


def test_hessian_vector_product_is_two_vjps(local_tesseract):
    t = local_tesseract("rosenbrock")
    v = np.array([0.3, -1.1, 0.7, 2.0])
    _, r, jac = rosenbrock(X)
    # H = 2 J^T J + 2 sum_k r_k d^2 r_k / dx^2; only the b-terms are curved
    hess = 2 * jac.T @ jac
    for i in range(3):
        hess[i, i] += 2 * r[3 + i] * (-2.0 * np.sqrt(B))
    with Spy(t) as spy:
        got = Endpoints(t).vjp_jvp(inputs(), ["x"], ["loss"], {"loss": 1.0}, {"x": v})
        assert dict(spy.calls) == {"vector_jacobian_product": 2}
    np.testing.assert_allclose(got["x"], hess @ v, rtol=1e-8)


def test_missing_route_names_the_wrapper(local_tesseract):
    t = local_tesseract("nested")  # apply only
    with pytest.raises(tess_ad.NoGradientRouteError, match="with_finite_differences"):
        Endpoints(t).vjp(
            _nested_inputs(),
            ["params.{alpha}"],
            ["summary.{sumsq}"],
            {"summary.{sumsq}": 1.0},
        )


def _nested_inputs() -> dict:
    return example_inputs("nested")


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
    # the same three (torch makes the output tensors after the forward returns)
    assert passes.take() == {"inputs": 1, "outputs": 1, "unflatten": 3}
