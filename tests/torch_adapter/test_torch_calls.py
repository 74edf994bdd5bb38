"""How many endpoint calls each torch operation costs, counted on the real client.

One apply per forward, one VJP per backward (whatever the number of outputs
used), nothing for outputs whose cotangent is unused or zero, and the exact
counts of the second-order rules (vjp_jvp = 2 VJP calls).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from helpers import Spy
from torch.func import grad, hessian, jacrev, jvp, vjp
from torch_adapter_refs import (
    F64,
    ROSEN_X,
    nested_inputs,
    nested_tensors,
    rosenbrock_inputs,
    rosenbrock_ref,
)

import tess_ad
from tess_ad.torch import apply_tesseract

V = torch.tensor([0.3, -1.1, 0.7, 2.0], dtype=F64)
ENDPOINTS = (
    "apply",
    "vector_jacobian_product",
    "jacobian_vector_product",
    "jacobian",
    "abstract_eval",
)


def _counts(spy: Spy) -> dict[str, int]:
    return {k: spy.calls[k] for k in ENDPOINTS if spy.calls[k]}


def _vjp_outputs(spy: Spy, k: int = 0) -> list[str]:
    _, kwargs = spy.args["vector_jacobian_product"][k]
    return sorted(kwargs["vjp_outputs"])


def test_forward_is_one_apply(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    with Spy(t) as spy:
        apply_tesseract(t, rosenbrock_inputs(x))
        assert _counts(spy) == {"apply": 1}
        with torch.no_grad():
            apply_tesseract(t, rosenbrock_inputs(x))
        assert _counts(spy) == {"apply": 2}


def test_backward_is_one_vjp_for_the_used_outputs_only(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    with Spy(t) as spy:
        apply_tesseract(t, rosenbrock_inputs(x))["loss"].backward()
        assert _counts(spy) == {"apply": 1, "vector_jacobian_product": 1}
        assert _vjp_outputs(spy) == ["loss"]  # residuals unused: not requested

        spy.reset()
        out = apply_tesseract(t, rosenbrock_inputs(x))
        (out["loss"] + out["residuals"].sum()).backward()
        assert _counts(spy) == {"apply": 1, "vector_jacobian_product": 1}
        assert _vjp_outputs(spy) == ["loss", "residuals"]


def test_zero_cotangents_are_not_requested(local_tesseract):
    t = local_tesseract("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64)
    with Spy(t) as spy:
        _, fn = vjp(lambda x: apply_tesseract(t, rosenbrock_inputs(x)), x)
        # materialized but all-zero cotangent for residuals
        fn(
            {
                "loss": torch.tensor(1.0, dtype=F64),
                "residuals": torch.zeros(6, dtype=F64),
            }
        )
        assert _counts(spy) == {"apply": 1, "vector_jacobian_product": 1}
        assert _vjp_outputs(spy) == ["loss"]
        spy.reset()
        (g,) = fn(
            {
                "loss": torch.tensor(0.0, dtype=F64),
                "residuals": torch.zeros(6, dtype=F64),
            }
        )
        assert _counts(spy) == {}  # everything zero: no call at all
    torch.testing.assert_close(g, torch.zeros(4, dtype=F64), rtol=0, atol=0)


def test_only_inputs_that_require_grad_are_requested(local_tesseract):
    """FD proxy over the nested example: cost is 1 + 2n apply calls for n requested elements."""
    inner = local_tesseract("nested")
    t = tess_ad.with_finite_differences(inner)
    leaves = nested_tensors()
    alpha = leaves["params"]["alpha"].requires_grad_()
    inputs = nested_inputs({**leaves["params"], "alpha": alpha}, leaves["w"])
    with Spy(t) as proxy_spy, Spy(inner) as inner_spy:
        apply_tesseract(t, inputs)["summary"]["sumsq"].backward()
        assert _counts(proxy_spy) == {"apply": 1, "vector_jacobian_product": 1}
        _, kwargs = proxy_spy.args["vector_jacobian_product"][0]
        assert list(kwargs["vjp_inputs"]) == ["params.{alpha}"]
        assert _counts(inner_spy) == {
            "apply": 1 + 2 * 3
        }  # central differences on 3 elements


def test_forward_ad_is_one_jvp(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    with Spy(t) as spy, fwAD.dual_level():
        out = apply_tesseract(
            t, rosenbrock_inputs(fwAD.make_dual(torch.tensor(ROSEN_X, dtype=F64), V))
        )
        fwAD.unpack_dual(out["residuals"])
        assert _counts(spy) == {"apply": 1, "jacobian_vector_product": 1}


def test_forward_over_reverse_without_create_graph(tesseract_factory):
    """A backward inside a ``dual_level`` is still differentiated (forward mode).

    A plain backward calls the VJP endpoint directly, without the VJP
    Function that carries its derivative rules; it must not do so here, where
    forward-mode AD tracks the backward even though ``create_graph`` is off.
    """
    t = tesseract_factory("rosenbrock")
    x0 = torch.tensor(ROSEN_X, dtype=F64)
    with Spy(t) as spy, fwAD.dual_level():
        x = fwAD.make_dual(x0, V).requires_grad_()
        (g,) = torch.autograd.grad(apply_tesseract(t, rosenbrock_inputs(x))["loss"], x)
        primal, tangent = fwAD.unpack_dual(g)
    loss = lambda x: rosenbrock_ref(x)["loss"]  # noqa: E731
    hessian_v = torch.autograd.functional.hessian(loss, x0) @ V
    # central differences of an exact VJP: about 1e-10 relative (documented)
    torch.testing.assert_close(tangent, hessian_v, rtol=1e-7, atol=1e-6)
    torch.testing.assert_close(primal, grad(loss)(x0), rtol=1e-12, atol=0)
    # the Hessian-vector product is two more VJPs (Endpoints.vjp_jvp)
    assert _counts(spy)["vector_jacobian_product"] == 3


def test_double_backward_costs_two_more_vjps(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    with Spy(t) as spy:
        (g,) = torch.autograd.grad(
            apply_tesseract(t, rosenbrock_inputs(x))["loss"], x, create_graph=True
        )
        assert _counts(spy) == {"apply": 1, "vector_jacobian_product": 1}
        torch.autograd.grad(g @ V, x)
        # Endpoints.vjp_jvp: central difference of two VJP calls
        assert _counts(spy) == {"apply": 1, "vector_jacobian_product": 3}


def test_gradient_through_the_cotangent(local_tesseract):
    """d(J^T u)/du = J: one JVP, plus the x-term when x is tracked at that level.

    A custom Function's backward only knows which inputs *require* grad, not
    which ones the current ``autograd.grad`` call asks for, so with x
    requiring grad the second-order x-term (2 VJPs) is computed too. Under
    ``torch.func`` with x fixed at the differentiated level, it is not.
    """
    t = local_tesseract("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    u = torch.ones(6, dtype=F64, requires_grad=True)
    with Spy(t) as spy:
        (g,) = torch.autograd.grad(
            apply_tesseract(t, rosenbrock_inputs(x))["residuals"],
            x,
            u,
            create_graph=True,
        )
        torch.autograd.grad(g @ V, u)
        assert _counts(spy) == {
            "apply": 1,
            "vector_jacobian_product": 3,
            "jacobian_vector_product": 1,
        }

        spy.reset()
        _, fn = vjp(
            lambda x: apply_tesseract(t, rosenbrock_inputs(x))["residuals"], x.detach()
        )
        jac_t = jacrev(lambda u: fn(u)[0] @ V)(u.detach())  # = J V
        # the value fn(u) is one VJP; its derivative in u is one JVP, no x-term
        assert _counts(spy) == {
            "apply": 1,
            "vector_jacobian_product": 1,
            "jacobian_vector_product": 1,
        }
    expected = torch.func.jvp(
        lambda x: rosenbrock_ref(x)["residuals"], (x.detach(),), (V,)
    )[1]
    torch.testing.assert_close(jac_t, expected, rtol=1e-13, atol=1e-12)


def test_torch_func_counts(local_tesseract):
    """Counts of the torch.func routes, first and second order (n = 4 inputs).

    Forward mode is eager: under ``jvp``/``jacfwd`` the tangent of the primal
    output is computed (one JVP per direction) even when, as inside
    ``hessian = jacfwd(jacrev(f))``, nothing uses it. ``jacrev(jacrev(f))``
    gives the same Hessian without those JVP calls.
    """
    t = local_tesseract("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64)

    def loss(x):
        return apply_tesseract(t, rosenbrock_inputs(x))["loss"]

    with Spy(t) as spy:
        grad(loss)(x)
        assert _counts(spy) == {"apply": 1, "vector_jacobian_product": 1}
        spy.reset()
        jvp(
            grad(loss), (x,), (V,)
        )  # one HVP: 1 VJP + vjp_jvp (2 VJPs), + the eager JVP
        assert _counts(spy) == {
            "apply": 1,
            "vector_jacobian_product": 3,
            "jacobian_vector_product": 1,
        }
        spy.reset()
        jacrev(jacrev(loss))(x)  # 1 VJP, then one vjp_jvp per basis direction
        assert _counts(spy) == {"apply": 1, "vector_jacobian_product": 1 + 2 * 4}
        spy.reset()
        # the same, plus the eager JVP of the primal output along the 4 directions:
        # a batch of tangents at one point, which Endpoints.jvp_many serves with one
        # jacobian call (rosenbrock has that endpoint), as jax.jacfwd does
        hessian(loss)(x)
        assert _counts(spy) == {
            "apply": 1,
            "vector_jacobian_product": 1 + 2 * 4,
            "jacobian": 1,
        }


def test_served_counts_match(served_tesseract):
    """The same accounting holds through HTTP (the spy wraps the served client)."""
    t = served_tesseract("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    with Spy(t) as spy:
        apply_tesseract(t, rosenbrock_inputs(x))["loss"].backward()
        assert _counts(spy) == {"apply": 1, "vector_jacobian_product": 1}
    assert np.isfinite(x.grad.numpy()).all()
