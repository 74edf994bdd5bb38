"""torch.func transforms through tess_ad.torch: grad, vjp, jvp, vmap, jacrev,
jacfwd, vmap(grad), and the second-order compositions (hessian, jacrev(jacrev)).

tesseract-torch refuses all of these; here each is compared with the same
transform applied to a pure-torch reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import Spy
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap
from torch_adapter_refs import (
    F64,
    ROSEN_X,
    float32_ref,
    float32_values,
    nested_inputs,
    nested_ref,
    nested_tensors,
    rosenbrock_inputs,
    rosenbrock_ref,
)

import tess_ad
from tess_ad.torch import apply_tesseract

X = torch.tensor(ROSEN_X, dtype=F64)
V = torch.tensor([0.3, -1.1, 0.7, 2.0], dtype=F64)
BATCH = torch.tensor(
    [[-1.2, 1.0, 0.5, 2.0], [0.0, 0.1, 0.2, 0.3], [1.0, 1.0, 1.0, 1.0]], dtype=F64
)
EXACT = {"rtol": 1e-13, "atol": 1e-11}  # exact endpoints: rounding only
SECOND = {"rtol": 1e-9, "atol": 1e-8}  # central differences of an exact VJP


def _loss(t):
    return lambda x: apply_tesseract(t, rosenbrock_inputs(x))["loss"]


def _residuals(t):
    return lambda x: apply_tesseract(t, rosenbrock_inputs(x))["residuals"]


def _ref_loss(x):
    return rosenbrock_ref(x)["loss"]


def _ref_residuals(x):
    return rosenbrock_ref(x)["residuals"]


def test_grad(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    torch.testing.assert_close(grad(_loss(t))(X), grad(_ref_loss)(X), **EXACT)


def test_vjp_and_jvp(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    u = torch.tensor([1.0, -0.5, 0.25, 2.0, 0.0, -1.5], dtype=F64)
    out, fn = vjp(_residuals(t), X)
    ref_out, ref_fn = vjp(_ref_residuals, X)
    torch.testing.assert_close(out, ref_out, **EXACT)
    torch.testing.assert_close(fn(u)[0], ref_fn(u)[0], **EXACT)

    out, tangent = jvp(_residuals(t), (X,), (V,))
    _, ref_tangent = jvp(_ref_residuals, (X,), (V,))
    torch.testing.assert_close(out, ref_out, **EXACT)
    torch.testing.assert_close(tangent, ref_tangent, **EXACT)


def test_vmap_is_sequential(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    with Spy(t) as spy:
        got = vmap(_residuals(t))(BATCH)
    assert spy.calls["apply"] == len(BATCH)
    torch.testing.assert_close(got, vmap(_ref_residuals)(BATCH), **EXACT)
    # batch along another axis, and an unbatched argument next to a batched one
    torch.testing.assert_close(
        vmap(_loss(t), in_dims=1)(BATCH.T), vmap(_ref_loss)(BATCH), **EXACT
    )


def test_vmap_stacks_static_outputs(local_tesseract):
    """Non-differentiable outputs seen inside vmap are stacked along a batch axis."""
    t = local_tesseract("nested")
    leaves = nested_tensors()
    seen = []

    def f(alpha):
        out = apply_tesseract(
            t, nested_inputs({**leaves["params"], "alpha": alpha}, leaves["w"])
        )
        seen.append(out["info"])
        return out["out"]

    alphas = torch.stack([leaves["params"]["alpha"] * s for s in (1.0, -1.0, 3.0)])
    got = vmap(f)(alphas)
    expected = torch.stack(
        [
            nested_ref(nested_inputs({**leaves["params"], "alpha": a}, leaves["w"]))[
                "out"
            ]
            for a in alphas
        ]
    )
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)
    (info,) = seen
    assert info["label"] == "demo"  # strings: kept once when all samples agree
    np.testing.assert_array_equal(
        info["n_layers"], [2, 2, 2]
    )  # numbers: one per sample
    assert isinstance(info["positive"], np.ndarray) and info["positive"].shape == (3, 3)
    np.testing.assert_array_equal(info["positive"], expected.numpy() > 0)


def test_jacrev_and_jacfwd(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    expected = jacrev(_ref_residuals)(X)
    # rosenbrock has a jacobian endpoint: the whole batch of basis (co)tangents
    # is one jacobian call (Endpoints.vjp_many / jvp_many), as in jax.jacrev/jacfwd
    with Spy(t) as spy:
        torch.testing.assert_close(jacrev(_residuals(t))(X), expected, **EXACT)
    assert spy.calls["jacobian"] == 1 and spy.calls["vector_jacobian_product"] == 0
    with Spy(t) as spy:
        torch.testing.assert_close(jacfwd(_residuals(t))(X), expected, **EXACT)
    assert spy.calls["jacobian"] == 1 and spy.calls["jacobian_vector_product"] == 0


def test_vmap_of_grad(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    with Spy(t) as spy:
        got = vmap(grad(_loss(t)))(BATCH)
    assert spy.calls["apply"] == 3 and spy.calls["vector_jacobian_product"] == 3
    torch.testing.assert_close(got, vmap(grad(_ref_loss))(BATCH), **EXACT)


@pytest.mark.parametrize("second", ["hessian", "jacrev_jacrev", "jvp_grad", "vmap_hvp"])
def test_second_order(tesseract_factory, second):
    t = tesseract_factory("rosenbrock")
    f = _loss(t)
    if second == "hessian":  # jacfwd(jacrev(f)): forward over reverse
        got, want = hessian(f)(X), hessian(_ref_loss)(X)
    elif second == "jacrev_jacrev":  # reverse over reverse
        got, want = jacrev(jacrev(f))(X), hessian(_ref_loss)(X)
    elif second == "jvp_grad":  # one Hessian-vector product
        got, want = jvp(grad(f), (X,), (V,))[1], hessian(_ref_loss)(X) @ V
    else:  # batched Hessian-vector products

        def hvp(v):
            return jvp(grad(f), (X,), (v,))[1]

        got, want = vmap(hvp)(BATCH), BATCH @ hessian(_ref_loss)(X)
    scale = want.abs().max().item()
    torch.testing.assert_close(
        got, want, rtol=SECOND["rtol"], atol=SECOND["atol"] * scale
    )


def test_float32_transforms(local_tesseract):
    t = local_tesseract("float32")
    x, w, shift = float32_values()

    def energy(x, w):
        return apply_tesseract(t, {"x": x, "w": w, "shift": shift})["energy"]

    def ref(x, w):
        return float32_ref(x, w, shift.double())["energy"]

    gx, gw = grad(energy, argnums=(0, 1))(x, w)
    assert gx.dtype == gw.dtype == torch.float32
    rx, rw = grad(ref, argnums=(0, 1))(x.double(), w.double())
    torch.testing.assert_close(gx.double(), rx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw.double(), rw, rtol=1e-5, atol=1e-6)

    jac = jacfwd(lambda x: apply_tesseract(t, {"x": x, "w": w, "shift": shift})["y"])(x)
    assert jac.dtype == torch.float32
    torch.testing.assert_close(
        jac.double(),
        torch.diag(w.double() * torch.cos(x.double())),
        rtol=1e-5,
        atol=1e-6,
    )

    h = hessian(energy)(x, w)
    assert h.dtype == torch.float32
    # float32 central differences of the VJP: ~1e-4 relative
    torch.testing.assert_close(
        h.double(), hessian(ref)(x.double(), w.double()), rtol=1e-3, atol=1e-3
    )


def test_float32_vjp_jvp_vmap_jacrev(tesseract_factory):
    """float32 in, float32 out, float32 derivatives; values to float32 precision."""
    t = tesseract_factory("float32")
    x, w, shift = float32_values()

    def y(x):
        return apply_tesseract(t, {"x": x, "w": w, "shift": shift})["y"]

    def ref(x):
        return float32_ref(x, w.double(), shift.double())["y"]

    tol = {"rtol": 1e-5, "atol": 1e-6}
    v = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float32)
    out, pullback = vjp(y, x)
    (g,) = pullback(v)
    _, ref_pullback = vjp(ref, x.double())
    assert out.dtype == g.dtype == torch.float32
    torch.testing.assert_close(g.double(), ref_pullback(v.double())[0], **tol)

    _, tangent = jvp(y, (x,), (v,))
    _, ref_tangent = jvp(ref, (x.double(),), (v.double(),))
    assert tangent.dtype == torch.float32
    torch.testing.assert_close(tangent.double(), ref_tangent, **tol)

    batch = torch.stack([x, 2 * x])
    got = vmap(y)(batch)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), vmap(ref)(batch.double()), **tol)

    jac = jacrev(y)(x)
    assert jac.dtype == torch.float32
    torch.testing.assert_close(jac.double(), jacrev(ref)(x.double()), **tol)


def test_nested_finite_differences_transforms(tesseract_factory):
    t = tess_ad.with_finite_differences(tesseract_factory("nested"))
    leaves = nested_tensors()

    def out(params, w0):
        return apply_tesseract(t, nested_inputs(params, [w0, leaves["w"][1]]))["out"]

    def ref(params, w0):
        return nested_ref(nested_inputs(params, [w0, leaves["w"][1]]))["out"]

    args = (leaves["params"], leaves["w"][0])
    got = jacrev(out, argnums=(0, 1))(*args)
    want = jacrev(ref, argnums=(0, 1))(*args)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)
    got = jacfwd(out, argnums=(0, 1))(*args)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)

    def sumsq(params):
        return apply_tesseract(t, nested_inputs(params, leaves["w"]))["summary"][
            "sumsq"
        ]

    def ref_sumsq(params):
        return nested_ref(nested_inputs(params, leaves["w"]))["summary"]["sumsq"]

    batch = {k: torch.stack([v, 0.5 * v]) for k, v in leaves["params"].items()}
    torch.testing.assert_close(
        vmap(grad(sumsq))(batch), vmap(grad(ref_sumsq))(batch), rtol=1e-7, atol=1e-9
    )


def test_forward_over_forward_is_refused_with_advice(local_tesseract):
    f = _loss(local_tesseract("rosenbrock"))
    with pytest.raises(NotImplementedError, match=r"jacfwd\(jacrev|hessian"):
        jacfwd(jacfwd(f))(X)


def test_third_order_is_refused(local_tesseract):
    f = _loss(local_tesseract("rosenbrock"))
    with pytest.raises(NotImplementedError, match="at most twice"):
        jacrev(jacrev(jacrev(f)))(X)


def test_non_differentiable_inputs_under_transforms(local_tesseract):
    """vmap over a static input works; grad with respect to one is zero (a constant)."""
    t32 = local_tesseract("float32")
    x, w, _ = float32_values()
    shifts = torch.tensor([[0.0, 0.5, -0.5], [1.0, 1.0, 1.0]])
    got = vmap(lambda s: apply_tesseract(t32, {"x": x, "w": w, "shift": s})["y"])(
        shifts
    )
    torch.testing.assert_close(got, w * torch.sin(x) + shifts, rtol=1e-6, atol=1e-6)

    t = local_tesseract("rosenbrock")

    def loss_of_a(a):
        return apply_tesseract(t, rosenbrock_inputs(X, a))["loss"]

    a = torch.tensor([1.0, 2.0], dtype=F64)
    want = torch.stack([rosenbrock_ref(X, float(v))["loss"] for v in a])
    torch.testing.assert_close(vmap(loss_of_a)(a), want, **EXACT)
    assert grad(loss_of_a)(torch.tensor(2.0, dtype=F64)).item() == 0.0
