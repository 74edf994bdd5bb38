"""A list of differentiable arrays in a union with ``str`` (tesseract-core's LazySequence).

The ``sequence`` Tesseract takes ``items: LazySequence[Differentiable[Array]]``,
whose schema is ``list[Differentiable[Array]] | str``. A list's arrays are
differentiable leaves ``items.[0]``, ``items.[1]``...; a ``"@glob"`` string
is a constant. Picking the union branch must not turn the list into a NumPy
array: that fails on tracers (``TracerArrayConversionError``) and would take
a list of equal-length arrays for one stacked array.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import Spy

from tess_ad.jax import apply_tesseract

SHIFT = 0.5
RAGGED = [np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])]
EQUAL = [np.array([1.0, 2.0]), np.array([3.0, -4.0])]
MODES = ["eager", "jit"]


def reference(items, shift, weight=1.0):
    """The Tesseract in JAX: total and scaled of its docstring."""
    w = weight * (1.0 + jnp.arange(len(items)))
    total = sum(w[i] * jnp.sum((x + shift) ** 2) for i, x in enumerate(items))
    return {"total": total, "scaled": [w[i] * x for i, x in enumerate(items)]}


@pytest.fixture(params=["local", "served"])
def client(request, test_tesseract, served_test_tesseract):
    if request.param == "local":
        return test_tesseract("sequence")
    return served_test_tesseract("sequence")


def _run(fn, mode, *args):
    return (jax.jit(fn) if mode == "jit" else fn)(*args)


def _loss(client):
    def loss(items, shift):
        out = apply_tesseract(client, {"items": items, "shift": shift})
        return out["total"] + jnp.sum(out["scaled"][1] ** 2)

    return loss


def _ref_loss(items, shift):
    out = reference(items, shift)
    return out["total"] + jnp.sum(out["scaled"][1] ** 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data", [RAGGED, EQUAL], ids=["ragged", "equal-length"])
def test_grad_reaches_every_array_of_the_list(client, mode, data):
    items = [jnp.asarray(x) for x in data]
    with Spy(client) as spy:
        grads = _run(jax.grad(_loss(client), argnums=(0, 1)), mode, items, SHIFT)
    want = jax.grad(_ref_loss, argnums=(0, 1))(items, SHIFT)
    assert isinstance(grads[0], list) and len(grads[0]) == len(items)
    for got, ref in zip(grads[0], want[0], strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-14)
    np.testing.assert_allclose(grads[1], want[1], rtol=1e-14)
    assert spy.calls["vector_jacobian_product"] == 1
    args, kwargs = spy.args["vector_jacobian_product"][0]
    vjp_inputs = kwargs.get("vjp_inputs", args[1] if len(args) > 1 else None)
    assert set(vjp_inputs) == {"items.[0]", "items.[1]", "shift"}


@pytest.mark.parametrize("mode", MODES)
def test_jvp_and_jacfwd_through_the_list(client, mode):
    items = [jnp.asarray(x) for x in RAGGED]
    tangents = [jnp.ones(2), jnp.array([1.0, 0.0, -1.0])]

    def f(items):
        out = apply_tesseract(client, {"items": items, "shift": SHIFT})
        return out["total"], out["scaled"]

    (_, (t_total, t_scaled)) = _run(
        lambda i, t: jax.jvp(f, (i,), (t,)), mode, items, tangents
    )
    (_, (r_total, r_scaled)) = jax.jvp(
        lambda i: tuple(reference(i, SHIFT).values()), (items,), (tangents,)
    )
    np.testing.assert_allclose(t_total, r_total, rtol=1e-14)
    for got, ref in zip(t_scaled, r_scaled, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-14)
    jac = _run(jax.jacfwd(lambda i: f(i)[0]), mode, items)
    want = jax.grad(lambda i: reference(i, SHIFT)["total"])(items)
    for got, ref in zip(jac, want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-14)


@pytest.fixture
def glob(tmp_path):
    """The RAGGED items as tesseract-core array files, and the "@glob" that loads them."""
    for i, x in enumerate(RAGGED):
        encoded = {
            "object_type": "array",
            "shape": list(x.shape),
            "dtype": "float64",
            "data": {"buffer": x.tolist(), "encoding": "json"},
        }
        (tmp_path / f"sample_{i}.json").write_text(json.dumps(encoded))
    return f"@{tmp_path}/sample_*.json"


@pytest.mark.parametrize("mode", MODES)
def test_a_glob_string_is_a_constant(client, mode, glob):
    """Given as a string, the items load on the Tesseract's side; shift is still differentiable."""

    def total(shift):
        return apply_tesseract(client, {"items": glob, "shift": shift})["total"]

    if mode == "jit":
        apply_tesseract(client, {"items": glob, "shift": SHIFT})  # records the shapes
    out = apply_tesseract(client, {"items": glob, "shift": SHIFT, "weight": 2.0})
    ref = reference([jnp.asarray(x) for x in RAGGED], SHIFT, weight=2.0)
    np.testing.assert_allclose(out["total"], ref["total"], rtol=1e-14)
    assert out["count"] == 2
    got = _run(jax.grad(total), mode, SHIFT)
    want = jax.grad(lambda s: reference([jnp.asarray(x) for x in RAGGED], s)["total"])
    np.testing.assert_allclose(got, want(SHIFT), rtol=1e-14)
