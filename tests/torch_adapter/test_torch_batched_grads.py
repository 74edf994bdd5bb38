"""Batched gradients through PyTorch's legacy vmap: ``is_grads_batched``, ``jacobian(vectorize=True)``, batched gradcheck.

These three vmap the backward (or forward-mode) pass with
``torch._vmap_internals``, which does not consult an ``autograd.Function``'s
``vmap`` rule; the adapter routes their batch of cotangents (or tangents) at
one point to one ``VJPMany``/``JVPMany``, as for ``torch.func.jacrev``: one
``jacobian`` call when the Tesseract has that endpoint (rosenbrock), else one
VJP (JVP) per row (examples/float32). References: the unbatched loop of
single backward passes and pure-torch formulas.
"""

from __future__ import annotations

import pytest
import torch
from helpers import Spy
from torch_adapter_refs import (
    F64,
    ROSEN_X,
    float32_ref,
    float32_values,
    rosenbrock_inputs,
    rosenbrock_ref,
)

from tess_ad.torch import apply_tesseract

B = 5


def _cotangents(shape, dtype):
    generator = torch.Generator().manual_seed(0)
    return torch.randn((B, *shape), generator=generator, dtype=dtype)


def _loop(output, inputs, cts):
    """The unbatched reference: one backward per cotangent row, stacked."""
    rows = [torch.autograd.grad(output, inputs, ct, retain_graph=True) for ct in cts]
    return [torch.stack(column) for column in zip(*rows, strict=True)]


def test_is_grads_batched_one_jacobian_call(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    residuals = apply_tesseract(t, rosenbrock_inputs(x))["residuals"]
    cts = _cotangents(residuals.shape, F64)
    with Spy(t) as spy:
        (g,) = torch.autograd.grad(
            residuals, x, cts, is_grads_batched=True, retain_graph=True
        )
    assert dict(spy.calls) == {"jacobian": 1}
    assert g.shape == (B, 4)

    # The loop asks the VJP endpoint; the batch contracts the Jacobian: the
    # same float64 numbers up to summation order.
    (expected,) = _loop(residuals, [x], cts)
    torch.testing.assert_close(g, expected, rtol=1e-14, atol=1e-12)
    xr = x.detach().clone().requires_grad_()
    (analytic,) = torch.autograd.grad(
        rosenbrock_ref(xr)["residuals"], xr, cts, is_grads_batched=True
    )
    torch.testing.assert_close(g, analytic, rtol=1e-13, atol=1e-12)


def test_is_grads_batched_one_vjp_per_row(tesseract_factory):
    """examples/float32 has no jacobian endpoint: B VJP calls, each the loop's own."""
    t = tesseract_factory("float32")
    x, w, shift = float32_values()
    x.requires_grad_()
    w.requires_grad_()
    y = apply_tesseract(t, {"x": x, "w": w, "shift": shift})["y"]
    cts = _cotangents(y.shape, torch.float32)
    with Spy(t) as spy:
        gx, gw = torch.autograd.grad(
            y, [x, w], cts, is_grads_batched=True, retain_graph=True
        )
    assert dict(spy.calls) == {"vector_jacobian_product": B}
    assert gx.dtype == torch.float32 and gx.shape == (B, 3) and gw.shape == (B,)
    ex, ew = _loop(y, [x, w], cts)
    torch.testing.assert_close(gx, ex, rtol=0, atol=0)
    torch.testing.assert_close(gw, ew, rtol=0, atol=0)


def test_is_grads_batched_with_create_graph(local_tesseract):
    """The batched gradient is differentiable again: Hessian rows from central VJP differences."""
    t = local_tesseract("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    residuals = apply_tesseract(t, rosenbrock_inputs(x))["residuals"]
    cts = _cotangents(residuals.shape, F64)
    (g,) = torch.autograd.grad(
        residuals, x, cts, is_grads_batched=True, create_graph=True
    )
    (h,) = torch.autograd.grad(g.sum(), x)

    xr = x.detach().clone().requires_grad_()
    (gr,) = torch.autograd.grad(
        rosenbrock_ref(xr)["residuals"],
        xr,
        cts,
        is_grads_batched=True,
        create_graph=True,
    )
    (hr,) = torch.autograd.grad(gr.sum(), xr)
    # Central differences of an exact float64 VJP: ~1e-10 relative (Endpoints.vjp_jvp).
    torch.testing.assert_close(h, hr, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
def test_jacobian_vectorize(tesseract_factory, strategy):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64)
    with Spy(t) as spy:
        jac = torch.autograd.functional.jacobian(
            lambda x: apply_tesseract(t, rosenbrock_inputs(x))["residuals"],
            x,
            vectorize=True,
            strategy=strategy,
        )
    assert dict(spy.calls) == {"apply": 1, "jacobian": 1}
    expected = torch.func.jacrev(lambda x: rosenbrock_ref(x)["residuals"])(x)
    torch.testing.assert_close(jac, expected, rtol=1e-14, atol=1e-13)

    t32 = tesseract_factory("float32")
    x32, w32, shift = float32_values()

    def f(x, w):
        out = apply_tesseract(t32, {"x": x, "w": w, "shift": shift})
        return out["y"], out["energy"]

    with Spy(t32) as spy:
        jac32 = torch.autograd.functional.jacobian(
            f, (x32, w32), vectorize=True, strategy=strategy
        )
    # Reverse mode: one VJP per output element (3 + 1); forward mode: one JVP
    # per input element (3 + 1), each batch in one VJPMany/JVPMany.
    endpoint = (
        "vector_jacobian_product"
        if strategy == "reverse-mode"
        else "jacobian_vector_product"
    )
    assert dict(spy.calls) == {"apply": 1, endpoint: 4}
    looped = torch.autograd.functional.jacobian(f, (x32, w32))  # a loop of backwards
    ref = torch.func.jacrev(
        lambda x, w: tuple(float32_ref(x, w, shift.double()).values()), argnums=(0, 1)
    )(x32.double(), w32.double())
    for got, same, want in zip(
        (j for row in jac32 for j in row),
        (j for row in looped for j in row),
        (j for row in ref for j in row),
        strict=True,
    ):
        torch.testing.assert_close(got, same, rtol=0, atol=0)
        # the Tesseract computes in float32
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


def test_gradcheck_batched(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)

    def f(x):
        out = apply_tesseract(t, rosenbrock_inputs(x))
        return out["loss"], out["residuals"]

    assert torch.autograd.gradcheck(
        f, (x,), check_batched_grad=True, check_forward_ad=True
    )


def test_gradgradcheck_batched(local_tesseract):
    t = local_tesseract("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda x: apply_tesseract(t, rosenbrock_inputs(x))["residuals"],
        (x,),
        check_batched_grad=True,
        atol=1e-5,  # second derivatives are central differences of the VJP
    )


def test_hessian_vectorize(local_tesseract):
    """``hessian(vectorize=True)``: the batch of rows reaches the second-order rules."""
    t = local_tesseract("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64)
    with Spy(t) as spy:
        hess = torch.autograd.functional.hessian(
            lambda x: apply_tesseract(t, rosenbrock_inputs(x))["loss"],
            x,
            vectorize=True,
        )
    # one VJP for the gradient, then two per Hessian row (central differences)
    assert dict(spy.calls) == {"apply": 1, "vector_jacobian_product": 1 + 2 * 4}
    expected = torch.func.hessian(lambda x: rosenbrock_ref(x)["loss"])(x)
    torch.testing.assert_close(hess, expected, rtol=1e-9, atol=1e-8)
