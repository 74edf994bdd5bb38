"""A list of differentiable arrays that may also be given as a file glob.

``items`` is a tesseract-core ``LazySequence`` (as in its ``dataloader``
example): a list of arrays, or a string ``"@<glob>"`` of JSON files loaded
one by one. Its schema is the union ``list[Differentiable[Array]] | str``.
When a list is given, each array is a differentiable leaf (``items.[0]``,
``items.[1]``, ...); a string is a constant, and ``shift`` is then the only
thing to differentiate.

    w_i = weight * (i + 1)
    total = sum_i w_i * sum((items[i] + shift) ** 2)
    scaled = [w_i * items[i] for each i]            count = len(items)
"""

from typing import Any

import numpy as np
from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64, ShapeDType
from tesseract_core.runtime.experimental import LazySequence


class InputSchema(BaseModel):
    items: LazySequence[Differentiable[Array[(None,), Float64]]]
    shift: Differentiable[Float64] = 0.0
    weight: float = 1.0


class OutputSchema(BaseModel):
    total: Differentiable[Float64]
    scaled: list[Differentiable[Array[(None,), Float64]]]
    count: int


def _weights(inputs: InputSchema) -> np.ndarray:
    return inputs.weight * (1.0 + np.arange(len(inputs.items)))


def apply(inputs: InputSchema) -> OutputSchema:
    items = list(inputs.items)
    w = _weights(inputs)
    return OutputSchema(
        total=sum(
            wi * np.sum((x + inputs.shift) ** 2) for wi, x in zip(w, items, strict=True)
        ),
        scaled=[wi * x for wi, x in zip(w, items, strict=True)],
        count=len(items),
    )


def abstract_eval(abstract_inputs):
    shapes = [item.shape for item in abstract_inputs.items]
    return {
        "total": ShapeDType(shape=(), dtype="float64"),
        "scaled": [ShapeDType(shape=s, dtype="float64") for s in shapes],
        "count": len(shapes),
    }


def _index(path: str) -> int:
    return int(path.split(".[")[1].rstrip("]"))


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    items = list(inputs.items)
    w = _weights(inputs)
    ts = tangent_vector.get("shift", 0.0)
    out: dict[str, Any] = {}
    if "total" in jvp_outputs:
        out["total"] = sum(
            w[i]
            * 2.0
            * np.sum(
                (x + inputs.shift) * (tangent_vector.get(f"items.[{i}]", 0.0) + ts)
            )
            for i, x in enumerate(items)
        )
    for o in jvp_outputs:
        if o.startswith("scaled."):
            i = _index(o)
            t = tangent_vector.get(f"items.[{i}]")
            out[o] = w[i] * t if t is not None else np.zeros_like(items[i])
    return out


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    items = list(inputs.items)
    w = _weights(inputs)
    ct_total = cotangent_vector.get("total", 0.0)
    out = {}
    for p in vjp_inputs:
        if p == "shift":
            out[p] = ct_total * sum(
                w[i] * 2.0 * np.sum(x + inputs.shift) for i, x in enumerate(items)
            )
            continue
        i = _index(p)
        g = ct_total * w[i] * 2.0 * (items[i] + inputs.shift)
        if f"scaled.[{i}]" in vjp_outputs:
            g = g + w[i] * np.asarray(cotangent_vector[f"scaled.[{i}]"])
        out[p] = g
    return out
