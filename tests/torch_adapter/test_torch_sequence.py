"""PyTorch on a list of differentiable arrays in a union with ``str`` (LazySequence).

The same ``sequence`` Tesseract as the JAX tests
(tests/jax_adapter/tesseracts/sequence): the union branch must be picked
without turning the list into a NumPy array, which fails on tensors that
require grad ("Can't call numpy() on Tensor that requires grad").
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import Server, Spy

from tess_ad.torch import apply_tesseract

API = (
    Path(__file__).parents[1]
    / "jax_adapter"
    / "tesseracts"
    / "sequence"
    / "tesseract_api.py"
)
F64 = torch.float64


@pytest.fixture(scope="module", params=["local", "served"])
def client(request):
    from tesseract_core import Tesseract

    if request.param == "local":
        yield Tesseract.from_tesseract_api(str(API))
        return
    server = Server(API).start()
    try:
        yield Tesseract.from_url(server.url)
    finally:
        server.stop()


def _reference(items, shift):
    w = 1.0 + torch.arange(len(items), dtype=F64)
    total = sum(w[i] * torch.sum((x + shift) ** 2) for i, x in enumerate(items))
    return total, [w[i] * x for i, x in enumerate(items)]


@pytest.mark.parametrize(
    "data",
    [[[1.0, 2.0], [3.0, 4.0, 5.0]], [[1.0, 2.0], [3.0, -4.0]]],
    ids=["ragged", "equal-length"],
)
def test_backward_reaches_every_tensor_of_the_list(client, data):
    items = [torch.tensor(x, dtype=F64, requires_grad=True) for x in data]
    shift = torch.tensor(0.5, dtype=F64, requires_grad=True)
    with Spy(client) as spy:
        out = apply_tesseract(client, {"items": items, "shift": shift})
        (out["total"] + torch.sum(out["scaled"][1] ** 2)).backward()
    assert spy.calls["vector_jacobian_product"] == 1
    ref_items = [x.detach().clone().requires_grad_(True) for x in items]
    ref_shift = shift.detach().clone().requires_grad_(True)
    total, scaled = _reference(ref_items, ref_shift)
    (total + torch.sum(scaled[1] ** 2)).backward()
    for got, ref in zip(items, ref_items, strict=True):
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-14, atol=0)
    torch.testing.assert_close(shift.grad, ref_shift.grad, rtol=1e-14, atol=0)
