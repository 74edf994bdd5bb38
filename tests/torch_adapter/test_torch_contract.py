"""The documented contract of tess_ad.torch.apply_tesseract, checked literally.

Output types (tensor vs NumPy vs Python scalar), which inputs can receive
gradients, dtypes, devices, and drop-in compatibility with tesseract_torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tesseract_torch
import torch
from helpers import Spy, assert_trees_close, example_inputs
from torch_adapter_refs import (
    F64,
    NESTED_KEYS,
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


def test_public_surface():
    import tess_ad.torch as tt

    assert tt.__all__ == ["apply_tesseract", "save_intermediates", "sow"]
    assert tt.apply_tesseract is apply_tesseract


def test_import_tess_ad_does_not_load_torch():
    code = (
        "import sys, tess_ad; assert 'torch' not in sys.modules, 'tess_ad imported torch'; "
        "import tess_ad.torch; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rosenbrock_outputs_are_tensors_with_grad_fn(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    out = apply_tesseract(t, rosenbrock_inputs(x))
    assert set(out) == {"loss", "residuals"}
    for name in ("loss", "residuals"):
        assert type(out[name]) is torch.Tensor
        assert out[name].dtype == F64
        assert out[name].grad_fn is not None
    assert out["loss"].shape == ()
    assert_trees_close(
        {k: v.detach().numpy() for k, v in out.items()},
        {k: v.detach().numpy() for k, v in rosenbrock_ref(x).items()},
        rtol=1e-14,
    )


@pytest.mark.parametrize("x_kind", ["tensor_no_grad", "numpy", "list"])
def test_outputs_are_tensors_without_grad_fn_when_nothing_requires_grad(
    local_tesseract, x_kind
):
    x = {
        "tensor_no_grad": torch.tensor(ROSEN_X, dtype=F64),
        "numpy": np.array(ROSEN_X),
        "list": list(ROSEN_X),
    }[x_kind]
    out = apply_tesseract(local_tesseract("rosenbrock"), rosenbrock_inputs(x))
    for name in ("loss", "residuals"):
        assert type(out[name]) is torch.Tensor
        assert out[name].grad_fn is None
        assert not out[name].requires_grad
    ref = rosenbrock_ref(torch.tensor(ROSEN_X, dtype=F64))
    assert float(out["loss"]) == pytest.approx(float(ref["loss"]), rel=1e-14)


def test_nested_output_types(tesseract_factory):
    """Differentiable leaves become tensors; the rest stays NumPy / Python."""
    t = tess_ad.with_finite_differences(tesseract_factory("nested"))
    leaves = nested_tensors()
    params = {k: v.requires_grad_() for k, v in leaves["params"].items()}
    out = apply_tesseract(t, nested_inputs(params, leaves["w"]))

    assert set(out) == {"out", "summary", "info"}
    assert type(out["out"]) is torch.Tensor and out["out"].grad_fn is not None
    assert set(out["summary"]) == {"sumsq", "mean"}
    for v in out["summary"].values():
        assert type(v) is torch.Tensor and v.shape == () and v.dtype == F64
    info = out["info"]
    assert isinstance(info, dict)
    assert type(info["label"]) is str and info["label"] == "demo"
    assert type(info["n_layers"]) is int and info["n_layers"] == 2
    metadata = info["positive"]
    assert type(metadata) is np.ndarray and metadata.dtype == np.bool_
    assert not isinstance(metadata, torch.Tensor)
    # Documented way to use a non-differentiable output downstream.
    positive = torch.as_tensor(metadata)
    assert positive.dtype == torch.bool

    ref = nested_ref(nested_inputs(params, leaves["w"]))
    assert_trees_close(
        {
            "out": out["out"].detach().numpy(),
            "summary": {k: v.detach().item() for k, v in out["summary"].items()},
        },
        {
            "out": ref["out"].detach().numpy(),
            "summary": {k: v.detach().item() for k, v in ref["summary"].items()},
        },
        rtol=1e-14,
    )
    np.testing.assert_array_equal(metadata, ref["out"].detach().numpy() > 0)


def test_non_differentiable_tensor_inputs_get_no_gradient(tesseract_factory):
    """Tensors on `a` and `b` (plain floats in the schema) are constants."""
    t = tesseract_factory("rosenbrock")
    x = torch.tensor(ROSEN_X, dtype=F64, requires_grad=True)
    a = torch.tensor(2.0, dtype=F64, requires_grad=True)
    b = torch.tensor(50.0, dtype=F64, requires_grad=True)
    out = apply_tesseract(t, rosenbrock_inputs(x, a, b))
    ref = rosenbrock_ref(x, 2.0, 50.0)
    assert out["loss"].detach().item() == pytest.approx(
        ref["loss"].detach().item(), rel=1e-14
    )

    out["loss"].backward()
    assert a.grad is None and b.grad is None
    expected = torch.autograd.grad(rosenbrock_ref(x, 2.0, 50.0)["loss"], x)[0]
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=0)

    # Asking autograd for them explicitly: they are not part of the graph.
    out = apply_tesseract(t, rosenbrock_inputs(x, a, b))
    ga, gx = torch.autograd.grad(out["loss"], [a, x], allow_unused=True)
    assert ga is None
    torch.testing.assert_close(gx, expected, rtol=1e-12, atol=0)


def test_non_differentiable_array_tensor_gets_no_gradient(local_tesseract):
    """float32's `shift` is a static array: a tensor there is detached."""
    x, w, shift = float32_values()
    x.requires_grad_()
    shift.requires_grad_()
    out = apply_tesseract(local_tesseract("float32"), {"x": x, "w": w, "shift": shift})
    out["energy"].backward()
    assert shift.grad is None
    assert x.grad is not None and x.grad.dtype == torch.float32
    ref = float32_ref(x.detach(), w, shift.detach())
    torch.testing.assert_close(out["y"].detach(), ref["y"], rtol=1e-6, atol=1e-6)


def test_requires_grad_only_on_some_inputs(local_tesseract):
    """Only the tensors that require grad are differentiated, and only they are requested."""
    t = tess_ad.with_finite_differences(local_tesseract("nested"))
    leaves = nested_tensors()
    alpha = leaves["params"]["alpha"].requires_grad_()
    beta = leaves["params"]["beta.v{1}"]  # a tensor, but no gradient wanted
    w0 = leaves["w"][0].requires_grad_()
    w1 = leaves["w"][1].numpy()  # plain NumPy: a constant
    scale = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)  # static field
    inputs = nested_inputs({"alpha": alpha, "beta.v{1}": beta}, [w0, w1])
    inputs["layers"][0]["scale"] = scale

    with Spy(t) as spy:
        out = apply_tesseract(t, inputs)
        out["summary"]["sumsq"].backward()
    assert spy.calls["apply"] == 1 and spy.calls["vector_jacobian_product"] == 1
    _, kwargs = spy.args["vector_jacobian_product"][0]
    assert sorted(kwargs["vjp_inputs"]) == sorted(["params.{alpha}", "layers.[0].w"])
    assert list(kwargs["vjp_outputs"]) == ["summary.{sumsq}"]

    assert beta.grad is None and scale.grad is None
    ref_alpha = alpha.detach().clone().requires_grad_()
    ref_w0 = w0.detach().clone().requires_grad_()
    ref = nested_ref(
        nested_inputs(
            {"alpha": ref_alpha, "beta.v{1}": beta}, [ref_w0, torch.as_tensor(w1)]
        )
    )
    ga, gw = torch.autograd.grad(ref["summary"]["sumsq"], [ref_alpha, ref_w0])
    # central finite differences of apply (with_finite_differences)
    torch.testing.assert_close(alpha.grad, ga, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(w0.grad, gw, rtol=1e-7, atol=1e-9)


def test_float32_in_float32_out(local_tesseract):
    t = local_tesseract("float32")
    x, w, shift = float32_values()
    x.requires_grad_()
    w.requires_grad_()
    out = apply_tesseract(t, {"x": x, "w": w, "shift": shift})
    assert out["y"].dtype == torch.float32 and out["energy"].dtype == torch.float32
    gx, gw = torch.autograd.grad(out["energy"], [x, w], create_graph=True)
    assert gx.dtype == torch.float32 and gw.dtype == torch.float32
    hx = torch.autograd.grad(gx.sum(), x)[0]
    assert hx.dtype == torch.float32

    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        dual = fwAD.make_dual(x.detach(), torch.ones(3, dtype=torch.float32))
        tangent = fwAD.unpack_dual(
            apply_tesseract(t, {"x": dual, "w": w.detach(), "shift": shift})["y"]
        ).tangent
    assert tangent.dtype == torch.float32

    ref = float32_ref(x.detach().double(), w.detach().double(), shift.double())
    torch.testing.assert_close(
        out["energy"].detach().double(), ref["energy"], rtol=1e-6, atol=0
    )


def test_nested_dict_keys_with_dots_and_braces(local_tesseract):
    """`params.{beta.v\\{1\\}}` is one leaf; its gradient lands on the right tensor."""
    t = tess_ad.with_finite_differences(local_tesseract("nested"))
    leaves = nested_tensors()
    params = {k: v.requires_grad_() for k, v in leaves["params"].items()}
    assert tuple(params) == NESTED_KEYS
    out = apply_tesseract(t, nested_inputs(params, leaves["w"]))
    out["summary"]["mean"].backward()
    ref_params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    ref = nested_ref(nested_inputs(ref_params, leaves["w"]))
    grads = torch.autograd.grad(ref["summary"]["mean"], list(ref_params.values()))
    for (k, p), g in zip(params.items(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-7, atol=1e-9, msg=f"params.{k}")
    # alpha is weighted 1, beta.v{1} 2 (sorted keys): the gradients differ by that factor
    torch.testing.assert_close(
        params["beta.v{1}"].grad, 2 * params["alpha"].grad, rtol=1e-6, atol=1e-9
    )


@pytest.mark.parametrize("name", ["rosenbrock", "float32"])
def test_drop_in_for_tesseract_torch(local_tesseract, name):
    """Same structure, types, values and gradients as tesseract_torch (one import changes)."""
    t = local_tesseract(name)
    if name == "rosenbrock":

        def make():
            return {
                "x": torch.tensor(ROSEN_X, dtype=F64, requires_grad=True),
                "a": 1.0,
                "b": 100.0,
            }

        loss = "loss"
    else:

        def make():
            return {
                "x": float32_values()[0].requires_grad_(),
                "w": float32_values()[1].requires_grad_(),
                "shift": example_inputs("float32")["shift"],
            }

        loss = "energy"
    ours_in, theirs_in = make(), make()
    ours = apply_tesseract(t, ours_in)
    theirs = tesseract_torch.apply_tesseract(t, theirs_in)
    assert set(ours) == set(theirs)
    for k in theirs:
        assert type(ours[k]) is type(theirs[k])
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0)
    ours[loss].backward()
    theirs[loss].backward()
    for k, v in theirs_in.items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(ours_in[k].grad, v.grad, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_round_trip(local_tesseract):
    x = torch.tensor(ROSEN_X, dtype=F64, device="cuda", requires_grad=True)
    out = apply_tesseract(local_tesseract("rosenbrock"), rosenbrock_inputs(x))
    assert out["loss"].device.type == "cuda"
    out["loss"].backward()
    assert x.grad.device.type == "cuda"
    xc = x.detach().cpu().requires_grad_()
    torch.testing.assert_close(
        x.grad.cpu(),
        torch.autograd.grad(rosenbrock_ref(xc)["loss"], xc)[0],
        rtol=1e-12,
        atol=0,
    )


class _PassThroughClient:
    """A client that calls the aliasing Tesseract's functions with no validation.

    tesseract-core's clients validate (and so copy) every input and output; a
    client of one's own that satisfies tess_ad's ``TesseractClient`` protocol
    (``apply``, ``openapi_schema``, the endpoints the schema lists) need not, so
    what it returns can be the very arrays it was given.
    """

    def __init__(self, tesseract):
        self.openapi_schema = tesseract.openapi_schema

    def apply(self, inputs, run_id=None):
        return {"same": inputs["x"], "again": inputs["x"]}

    def vector_jacobian_product(
        self, inputs, vjp_inputs, vjp_outputs, cotangent_vector
    ):
        if list(vjp_outputs) == ["same"]:
            return {"x": cotangent_vector["same"]}  # the cotangent itself
        return {"x": sum(cotangent_vector[o] for o in vjp_outputs)}


def test_results_never_share_memory_with_inputs_or_each_other():
    """Results are shared without a copy only when nothing else holds their memory.

    A client whose apply returns its input (twice) and whose VJP returns the
    cotangent it was given: every tensor tess_ad hands back must own memory no
    one else writes to, so an in-place update of one changes nothing else.
    """
    from tesseract_core import Tesseract

    api = Path(__file__).parent / "tesseracts" / "aliasing" / "tesseract_api.py"
    t = _PassThroughClient(Tesseract.from_tesseract_api(str(api)))
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    out = apply_tesseract(t, {"x": x})
    with torch.no_grad():
        out["same"].add_(10.0)
    torch.testing.assert_close(x.detach(), torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    torch.testing.assert_close(out["again"].detach(), x.detach())
    ct = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    (g,) = torch.autograd.grad(out["same"], x, ct)
    g.mul_(0.0)
    torch.testing.assert_close(ct, torch.tensor([0.5, -1.0, 2.0], dtype=F64))
