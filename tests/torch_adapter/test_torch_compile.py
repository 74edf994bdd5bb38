"""``torch.compile`` of code that calls a Tesseract: a graph break around the call, the same numbers.

TorchDynamo cannot trace a Tesseract (NumPy, HTTP), so ``apply_tesseract``
runs eagerly between two compiled graphs, and its autograd node sits between
their compiled backward graphs. The tests compile with ``backend="aot_eager"``:
it runs the same TorchDynamo capture and AOTAutograd forward/backward split as
the default ``"inductor"`` backend, without inductor's code generation, which
takes about 25 s for this small function on the 2-core test machines (the
graph break is made by TorchDynamo, before any backend sees a graph).
"""

from __future__ import annotations

import pytest
import torch
from helpers import Spy
from torch_adapter_refs import F64, ROSEN_X, float32_values, rosenbrock_inputs

from tess_ad.torch import apply_tesseract

# TorchDynamo itself reads `.grad` of the intermediate tensor it hands over at
# a graph break, which makes torch warn; the same happens at any graph break on
# a non-leaf tensor, with or without tess_ad.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning"
)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch and leaves no compiled code behind."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def _loss(t):
    def loss(x):
        y = torch.sin(x) * 2.0  # compiled, before the break
        out = apply_tesseract(t, rosenbrock_inputs(y))
        return out["loss"] + (out["residuals"] ** 2).sum() * x.sum()  # compiled, after

    return loss


def test_compiled_matches_eager(tesseract_factory):
    t = tesseract_factory("rosenbrock")
    loss = _loss(t)
    compiled = torch.compile(loss, backend="aot_eager")
    for k in range(3):
        x = torch.tensor(ROSEN_X, dtype=F64) + 0.1 * k
        xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
        with Spy(t) as spy:
            value = compiled(xc)
            value.backward()
        # The Tesseract is called by the eager run of the call only, never
        # while TorchDynamo traces.
        assert dict(spy.calls) == {"apply": 1, "vector_jacobian_product": 1}
        expected = loss(xe)
        expected.backward()
        torch.testing.assert_close(value, expected, rtol=0, atol=0)
        torch.testing.assert_close(xc.grad, xe.grad, rtol=0, atol=0)
        if k == 0:  # new values reuse the compiled code: no recompilation
            torch.compiler.set_stance("fail_on_recompile")
    torch.compiler.set_stance("default")


def test_compiled_float32_module(local_tesseract):
    """An nn.Module with float32 parameters, compiled, feeding the float32 Tesseract."""
    t = local_tesseract("float32")
    x, w, shift = float32_values()

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor([1.0, 0.5, 2.0]))
            self.w = torch.nn.Parameter(w.clone())

        def forward(self, x):
            out = apply_tesseract(t, {"x": self.scale * x, "w": self.w, "shift": shift})
            return out["energy"] + out["y"].square().mean()

    eager = Model()
    compiled = torch.compile(Model(), backend="aot_eager")
    value, expected = compiled(x), eager(x)
    value.backward()
    expected.backward()
    torch.testing.assert_close(value, expected, rtol=0, atol=0)
    for name, p in compiled.named_parameters():
        ref = dict(eager.named_parameters())[name.removeprefix("_orig_mod.")]
        assert p.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, ref.grad, rtol=0, atol=0)
