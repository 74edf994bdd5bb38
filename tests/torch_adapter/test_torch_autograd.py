"""Classic autograd through tess_ad.torch: backward, autograd.grad, forward AD,
gradcheck / gradgradcheck and double backward (create_graph=True).

References: pure-torch re-implementations (analytic derivatives by torch's own
autograd) and the core's Endpoints called directly, which the adapter must
reproduce to the last bit since it does no arithmetic of its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
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
from tess_ad._endpoints import Endpoints
from tess_ad.torch import apply_tesseract

V = torch.tensor([0.3, -1.1, 0.7, 2.0], dtype=F64)
U = torch.tensor([1.0, -0.5, 0.25, 2.0, 0.0, -1.5], dtype=F64)  # residual cotangent


def _rosen(t):
    return lambda x: apply_tesseract(t, rosenbrock_inputs(x))


# -- reverse mode ------------------------------------------------------------


def test_backward_matches_analytic_and_endpoints(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    apply_tesseract(t, rosenbrock_inputs(x))["loss"].backward()

    xr = x.detach().clone().requires_grad_()
    expected = torch.autograd.grad(rosenbrock_ref(xr)["loss"], xr)[0]
    torch.testing.assert_close(x.grad, expected, rtol=1e-13, atol=1e-12)

    direct = Endpoints(t).vjp(
        rosenbrock_inputs(np.array(ROSEN_X)), ["x"], ["loss"], {"loss": np.float64(1.0)}
    )
    np.testing.assert_array_equal(x.grad.numpy(), direct["x"])


def test_autograd_grad_several_outputs(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    out = apply_tesseract(t, rosenbrock_inputs(x))
    (g,) = torch.autograd.grad(
        [out["loss"], out["residuals"]], [x], [torch.tensor(2.0, dtype=F64), U]
    )
    ref = rosenbrock_ref(x)
    (expected,) = torch.autograd.grad(
        [ref["loss"], ref["residuals"]], [x], [torch.tensor(2.0, dtype=F64), U]
    )
    torch.testing.assert_close(g, expected, rtol=1e-13, atol=1e-12)


def test_backward_float32(local_tesseract):
    x, w, shift = float32_values()
    x.requires_grad_()
    w.requires_grad_()
    out = apply_tesseract(local_tesseract("float32"), {"x": x, "w": w, "shift": shift})
    (out["energy"] + out["y"].sum()).backward()
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = float32_ref(xr, wr, shift.double())
    gx, gw = torch.autograd.grad(ref["energy"] + ref["y"].sum(), [xr, wr])
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad.double(), gx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad.double(), gw, rtol=1e-5, atol=1e-6)


def test_backward_nested_finite_differences(tesseract_factory):
    """A Tesseract with only `apply`, differentiated through with_finite_differences."""
    t = tess_ad.with_finite_differences(tesseract_factory("nested"))
    leaves = nested_tensors()
    params = {k: v.requires_grad_() for k, v in leaves["params"].items()}
    w = [v.requires_grad_() for v in leaves["w"]]
    b = [v.requires_grad_() for v in leaves["b"]]
    out = apply_tesseract(t, nested_inputs(params, w, b))
    loss = (
        out["summary"]["sumsq"]
        + (out["out"] * torch.tensor([1.0, -2.0, 0.5], dtype=F64)).sum()
    )
    grads = torch.autograd.grad(loss, [*params.values(), *w, *b])

    rp = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    rw = [v.detach().clone().requires_grad_() for v in w]
    rb = [v.detach().clone().requires_grad_() for v in b]
    ref = nested_ref(nested_inputs(rp, rw, rb))
    ref_loss = (
        ref["summary"]["sumsq"]
        + (ref["out"] * torch.tensor([1.0, -2.0, 0.5], dtype=F64)).sum()
    )
    expected = torch.autograd.grad(ref_loss, [*rp.values(), *rw, *rb])
    names = [f"params.{{{k}}}" for k in params] + [
        "layers.[0].w",
        "layers.[1].w",
        "layers.[0].b",
        "layers.[1].b",
    ]
    for name, g, e in zip(names, grads, expected, strict=True):
        # central differences of apply: ~1e-9 relative with scale-aware steps
        torch.testing.assert_close(
            g, e, rtol=1e-7, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_nested_without_gradient_route_names_the_fix(local_tesseract):
    leaves = nested_tensors()
    params = {k: v.requires_grad_() for k, v in leaves["params"].items()}
    out = apply_tesseract(local_tesseract("nested"), nested_inputs(params, leaves["w"]))
    with pytest.raises(tess_ad.NoGradientRouteError, match="with_finite_differences"):
        out["summary"]["sumsq"].backward()
    with fwAD.dual_level():
        dual = fwAD.make_dual(
            leaves["params"]["alpha"].detach(), torch.ones(3, dtype=F64)
        )
        # forward mode runs the JVP rule eagerly, inside the call
        with pytest.raises(
            tess_ad.NoGradientRouteError, match="with_finite_differences"
        ):
            apply_tesseract(
                local_tesseract("nested"),
                nested_inputs({**params, "alpha": dual}, leaves["w"]),
            )


# -- forward mode ------------------------------------------------------------


def test_forward_ad_dual_tensors(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64)
    with fwAD.dual_level():
        out = apply_tesseract(t, rosenbrock_inputs(fwAD.make_dual(x, V)))
        tangents = {k: fwAD.unpack_dual(v).tangent for k, v in out.items()}
    _, expected = torch.func.jvp(rosenbrock_ref, (x,), (V,))
    for k in ("loss", "residuals"):
        torch.testing.assert_close(tangents[k], expected[k], rtol=1e-13, atol=1e-12)
    direct = Endpoints(t).jvp(
        rosenbrock_inputs(x.numpy()), ["x"], ["loss", "residuals"], {"x": V.numpy()}
    )
    for k in ("loss", "residuals"):
        np.testing.assert_array_equal(tangents[k].numpy(), direct[k])


def test_forward_ad_float32_and_nested(local_tesseract):
    x, w, shift = float32_values()
    tx = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float32)
    with fwAD.dual_level():
        out = apply_tesseract(
            local_tesseract("float32"),
            {"x": fwAD.make_dual(x, tx), "w": w, "shift": shift},
        )
        ty = fwAD.unpack_dual(out["y"]).tangent
    _, ref = torch.func.jvp(
        lambda x: float32_ref(x, w.double(), shift.double())["y"],
        (x.double(),),
        (tx.double(),),
    )
    assert ty.dtype == torch.float32
    torch.testing.assert_close(ty.double(), ref, rtol=1e-5, atol=1e-6)

    t = tess_ad.with_finite_differences(local_tesseract("nested"))
    leaves = nested_tensors()
    direction = torch.tensor([[0.1, 0.2, -0.3], [1.0, 0.0, 0.5]], dtype=F64)
    with fwAD.dual_level():
        w0 = fwAD.make_dual(leaves["w"][0], direction)
        out = apply_tesseract(t, nested_inputs(leaves["params"], [w0, leaves["w"][1]]))
        tangent = fwAD.unpack_dual(out["out"]).tangent
    _, ref = torch.func.jvp(
        lambda w0: nested_ref(nested_inputs(leaves["params"], [w0, leaves["w"][1]]))[
            "out"
        ],
        (leaves["w"][0],),
        (direction,),
    )
    torch.testing.assert_close(tangent, ref, rtol=1e-6, atol=1e-8)


# -- gradcheck ---------------------------------------------------------------


def test_gradcheck_and_gradgradcheck_rosenbrock(tesseract_factory):
    f = _rosen(tesseract_factory("rosenbrock"))
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)

    def both(x):
        out = f(x)
        return out["loss"], out["residuals"]

    assert torch.autograd.gradcheck(both, (x,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(both, (x,), check_fwd_over_rev=True)
    assert torch.autograd.gradgradcheck(
        lambda x: f(x)["loss"], (x,), check_fwd_over_rev=True
    )


def test_gradcheck_and_gradgradcheck_nested_finite_differences(local_tesseract):
    """Derivatives of a Tesseract with only `apply` pass torch's own checks.

    The first derivatives are central differences of apply (~1e-9 error), so
    gradcheck runs with torch's defaults. For gradgradcheck both sides are
    second differences: torch's numerical one (step 1e-4, so that the ~1e-9
    noise of the FD VJP divided by the step stays ~1e-5) and ours,
    Endpoints.vjp_jvp = central differences of the FD VJP over a step sized
    for a VJP accurate to eps^(2/3) (about 5e-7 relative error on these
    Hessian entries of size 0.3-2.2). torch's side dominates: atol=rtol=1e-4.
    """
    t = tess_ad.with_finite_differences(local_tesseract("nested"))
    leaves = nested_tensors()
    w = leaves["w"]

    def f(alpha, beta, w0):
        out = apply_tesseract(
            t, nested_inputs({"alpha": alpha, "beta.v{1}": beta}, [w0, w[1]])
        )
        return out["out"], out["summary"]["sumsq"]

    args = (
        *(v.requires_grad_() for v in leaves["params"].values()),
        w[0].requires_grad_(),
    )
    assert torch.autograd.gradcheck(f, args, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(
        lambda a, b: f(a, b, w[0])[1], args[:2], eps=1e-4, atol=1e-4, rtol=1e-4
    )


# -- double backward ---------------------------------------------------------


def test_double_backward_hvp_rosenbrock(tesseract_factory):
    """create_graph=True: Hessian-vector products, the analytic Hessian and Endpoints.vjp_jvp."""
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(
        apply_tesseract(t, rosenbrock_inputs(x))["loss"], x, create_graph=True
    )
    assert g.grad_fn is not None
    (hv,) = torch.autograd.grad(g @ V, x)

    hessian = torch.func.hessian(lambda x: rosenbrock_ref(x)["loss"])(x.detach())
    # central differences of the exact VJP: ~1e-11 relative
    torch.testing.assert_close(
        hv, hessian @ V, rtol=1e-9, atol=1e-9 * hessian.abs().max().item()
    )

    direct = Endpoints(t).vjp_jvp(
        rosenbrock_inputs(np.array(ROSEN_X)),
        ["x"],
        ["loss"],
        {"loss": np.float64(1.0)},
        {"x": V.numpy()},
    )
    np.testing.assert_array_equal(hv.numpy(), direct["x"])

    # the full Hessian, one row per double backward
    rows = []
    for i in range(4):
        (g,) = torch.autograd.grad(
            apply_tesseract(t, rosenbrock_inputs(x))["loss"], x, create_graph=True
        )
        rows.append(torch.autograd.grad(g[i], x)[0])
    torch.testing.assert_close(
        torch.stack(rows), hessian, rtol=1e-9, atol=1e-9 * hessian.abs().max().item()
    )


def test_double_backward_through_the_cotangent(local_tesseract):
    """d/d(u) of the VJP J^T u is J: the gradient reaches a cotangent that requires grad."""
    t = local_tesseract("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    u = U.clone().requires_grad_()
    (g,) = torch.autograd.grad(
        apply_tesseract(t, rosenbrock_inputs(x))["residuals"], x, u, create_graph=True
    )
    gx, gu = torch.autograd.grad(g @ V, [x, u])

    xr = x.detach().clone().requires_grad_()
    ur = U.clone().requires_grad_()
    (gr,) = torch.autograd.grad(
        rosenbrock_ref(xr)["residuals"], xr, ur, create_graph=True
    )
    ex, eu = torch.autograd.grad(gr @ V, [xr, ur])
    torch.testing.assert_close(
        gu, eu, rtol=1e-13, atol=1e-12
    )  # J V, exact (JVP endpoint)
    torch.testing.assert_close(
        gx, ex, rtol=1e-8, atol=1e-8
    )  # sum_k u_k H_k V, central differences


def test_double_backward_float32(local_tesseract):
    x, w, shift = float32_values()
    x.requires_grad_()
    (g,) = torch.autograd.grad(
        apply_tesseract(local_tesseract("float32"), {"x": x, "w": w, "shift": shift})[
            "energy"
        ],
        x,
        create_graph=True,
    )
    v = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float32)
    (hv,) = torch.autograd.grad(g @ v, x)
    assert hv.dtype == torch.float32
    hessian = torch.func.hessian(
        lambda x: float32_ref(x, w.double(), shift.double())["energy"]
    )(x.detach().double())
    # float32 central differences of the VJP: ~1e-4 relative (Endpoints.vjp_jvp docs)
    torch.testing.assert_close(hv.double(), hessian @ v.double(), rtol=1e-3, atol=1e-3)


def test_double_backward_nested_finite_differences(local_tesseract):
    t = tess_ad.with_finite_differences(local_tesseract("nested"))
    leaves = nested_tensors()
    params = {k: v.clone().requires_grad_() for k, v in leaves["params"].items()}
    out = apply_tesseract(t, nested_inputs(params, leaves["w"]))
    grads = torch.autograd.grad(
        out["summary"]["sumsq"], list(params.values()), create_graph=True
    )
    direction = [
        torch.tensor([1.0, -1.0, 0.5], dtype=F64),
        torch.tensor([0.2, 0.3, -0.4], dtype=F64),
    ]
    hv = torch.autograd.grad(
        sum((g * d).sum() for g, d in zip(grads, direction, strict=True)),
        list(params.values()),
    )

    def ref_loss(a, b):
        return nested_ref(nested_inputs({"alpha": a, "beta.v{1}": b}, leaves["w"]))[
            "summary"
        ]["sumsq"]

    p0 = tuple(leaves["params"].values())
    _, expected = torch.func.jvp(
        lambda a, b: torch.func.grad(ref_loss, argnums=(0, 1))(a, b),
        p0,
        tuple(direction),
    )
    # central differences of a finite-difference VJP, step sized for its eps^(2/3)
    # accuracy: ~5e-7 relative here
    for got, want in zip(hv, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
