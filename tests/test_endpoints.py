"""tess_ad._endpoints.Endpoints: the one place every derivative number is made.

The "same numbers in JAX and PyTorch" claim rests on this module: both
adapters hand flat NumPy trees to ``Endpoints`` and never compute a
derivative themselves. These tests check its routes against analytic values
(rosenbrock's formulas, written in NumPy here) and count the endpoint calls
each route makes; ``test_adapter_parity.py`` runs both adapters through it.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Spy, example_inputs

import tess_ad
from tess_ad._endpoints import Endpoints

X = np.array([-1.2, 1.0, 0.5, 2.0])


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
        ((_, kwargs),) = spy.args["vector_jacobian_product"]
        assert list(kwargs["vjp_outputs"]) == [
            "loss"
        ]  # the all-zero cotangent is dropped
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
