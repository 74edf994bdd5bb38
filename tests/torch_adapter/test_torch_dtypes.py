"""Differentiable tensors of another dtype than the schema's are cast, and differentiated through the cast.

A float32 ``nn.Parameter`` into a float64 Tesseract (rosenbrock) and float64
tensors into a float32 one (examples/float32): the Tesseract computes in its
own dtype, and every gradient or tangent comes back in the dtype of the tensor
it belongs to, as autograd does for any ``tensor.to(dtype)``.

The references are the same call made with tensors already in the schema's
dtype (the cast is then the only difference, so the numbers must match to the
bit after rounding), and the pure-torch formulas at the precision the
Tesseract computes in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from helpers import Spy
from torch_adapter_refs import (
    F64,
    ROSEN_X,
    float32_ref,
    float32_values,
    rosenbrock_inputs,
    rosenbrock_ref,
)

from tess_ad._endpoints import Endpoints
from tess_ad.torch import apply_tesseract

F32 = torch.float32
U = torch.tensor([1.0, -0.5, 0.25, 2.0, 0.0, -1.5], dtype=F64)  # residuals cotangent
# One float32 ulp relative: the only float32 step of a float64 Tesseract's
# gradient of a float32 parameter is its final rounding to float32.
F32_ULP = 2.0**-23


def _sent(spy: Spy, endpoint: str) -> list[dict]:
    """The ``inputs`` tree of each call of ``endpoint`` (positional or keyword)."""
    return [a[0] if a else kw["inputs"] for a, kw in spy.args[endpoint]]


def _rosen_loss(t):
    def loss(x):
        out = apply_tesseract(t, rosenbrock_inputs(x))
        return out["loss"] + out["residuals"] @ U

    return loss


def test_float32_parameter_into_float64_field(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.nn.Parameter(torch.tensor(ROSEN_X, dtype=F32))
    with Spy(t) as spy:
        out = apply_tesseract(t, rosenbrock_inputs(x))
        assert out["loss"].dtype == F64  # the Tesseract's dtype
        (out["loss"] + out["residuals"] @ U).backward()
    assert x.grad.dtype == F32
    # The Tesseract is sent the schema's dtype, not the parameter's.
    sent = _sent(spy, "apply") + _sent(spy, "vector_jacobian_product")
    assert len(sent) == 2 and all(s["x"].dtype == np.float64 for s in sent)

    x64 = x.detach().double()  # exact: every float32 is a float64
    direct = Endpoints(t).vjp(
        rosenbrock_inputs(x64.numpy()),
        ["x"],
        ["loss", "residuals"],
        {"loss": np.float64(1.0), "residuals": U.numpy()},
    )["x"]
    np.testing.assert_array_equal(x.grad.numpy(), direct.astype(np.float32))

    xr = x64.clone().requires_grad_()
    ref = rosenbrock_ref(xr)
    (expected,) = torch.autograd.grad(ref["loss"] + ref["residuals"] @ U, xr)
    torch.testing.assert_close(x.grad, expected.float(), rtol=F32_ULP, atol=0)
    torch.testing.assert_close(
        out["loss"].detach(), ref["loss"].detach(), rtol=1e-15, atol=0
    )


def test_float64_into_float32_field(tesseract_factory):
    t = tesseract_factory("float32")
    x32, w32, shift = float32_values()
    x = x32.double().requires_grad_()
    w = w32.double().requires_grad_()
    with Spy(t) as spy:
        out = apply_tesseract(t, {"x": x, "w": w, "shift": shift})
        assert out["y"].dtype == F32 and out["energy"].dtype == F32
        (out["energy"] + out["y"].sum()).backward()
    sent = _sent(spy, "apply") + _sent(spy, "vector_jacobian_product")
    assert len(sent) == 2 and all(s["x"].dtype == np.float32 for s in sent)
    assert x.grad.dtype == F64 and w.grad.dtype == F64

    # The same call in float32: the cast changes nothing but the grads' dtype.
    xs, ws = x32.clone().requires_grad_(), w32.clone().requires_grad_()
    same = apply_tesseract(t, {"x": xs, "w": ws, "shift": shift})
    (same["energy"] + same["y"].sum()).backward()
    torch.testing.assert_close(x.grad, xs.grad.double(), rtol=0, atol=0)
    torch.testing.assert_close(w.grad, ws.grad.double(), rtol=0, atol=0)

    # Analytic, in float64: the Tesseract computes in float32 (eps 6e-8), a
    # few roundings per entry and a sum of three terms for w.
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = float32_ref(xr, wr, shift.double())
    gx, gw = torch.autograd.grad(ref["energy"] + ref["y"].sum(), [xr, wr])
    torch.testing.assert_close(x.grad, gx, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(w.grad, gw, rtol=1e-6, atol=1e-6)


def test_forward_ad_through_the_cast(tesseract_factory):
    # float32 primal and tangent into float64: the output tangent is float64,
    # computed from the exactly widened values.
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F32)
    tx = torch.tensor([0.3, -1.1, 0.7, 2.0], dtype=F32)
    with fwAD.dual_level():
        out = apply_tesseract(t, rosenbrock_inputs(fwAD.make_dual(x, tx)))
        tangent = fwAD.unpack_dual(out["residuals"]).tangent
    assert tangent.dtype == F64
    _, expected = torch.func.jvp(
        lambda x: rosenbrock_ref(x)["residuals"], (x.double(),), (tx.double(),)
    )
    torch.testing.assert_close(tangent, expected, rtol=1e-13, atol=1e-12)

    # float64 into float32: the tangent is the float32 one of a float32 call.
    t32 = tesseract_factory("float32")
    x32, w32, shift = float32_values()
    t32x = torch.tensor([1.0, -2.0, 0.5], dtype=F32)
    with fwAD.dual_level():
        widened = apply_tesseract(
            t32,
            {
                "x": fwAD.make_dual(x32.double(), t32x.double()),
                "w": w32.double(),
                "shift": shift,
            },
        )
        got = fwAD.unpack_dual(widened["y"]).tangent
        same = apply_tesseract(
            t32, {"x": fwAD.make_dual(x32, t32x), "w": w32, "shift": shift}
        )
        want = fwAD.unpack_dual(same["y"]).tangent
    assert got.dtype == F32
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torch_func_grad_through_the_cast(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F32)
    g = torch.func.grad(_rosen_loss(t))(x)
    assert g.dtype == F32
    xr = x.double().requires_grad_()
    ref = rosenbrock_ref(xr)
    (expected,) = torch.autograd.grad(ref["loss"] + ref["residuals"] @ U, xr)
    torch.testing.assert_close(g, expected.float(), rtol=F32_ULP, atol=0)

    t32 = tesseract_factory("float32")
    x32, w32, shift = float32_values()

    def energy(x, w):
        return apply_tesseract(t32, {"x": x, "w": w, "shift": shift})["energy"]

    gx, gw = torch.func.grad(energy, argnums=(0, 1))(x32.double(), w32.double())
    assert gx.dtype == F64 and gw.dtype == F64
    sx, sw = torch.func.grad(energy, argnums=(0, 1))(x32, w32)
    torch.testing.assert_close(gx, sx.double(), rtol=0, atol=0)
    torch.testing.assert_close(gw, sw.double(), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_tensor_is_cast_like_a_float_one(local_tesseract, dtype):
    t = local_tesseract("rosenbrock")
    x = torch.tensor([1, -2, 3, 0], dtype=dtype)
    out = apply_tesseract(t, rosenbrock_inputs(x))
    ref = rosenbrock_ref(x.double())
    assert out["loss"].dtype == F64
    torch.testing.assert_close(out["residuals"], ref["residuals"], rtol=0, atol=0)
