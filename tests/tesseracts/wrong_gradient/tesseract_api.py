"""A Tesseract whose hand-written gradient is wrong: `tess-ad check` must catch it.

y = sin(x) * s, but the VJP and JVP use cos(x) * s + 0.1 * x (a typical slip:
a stray term left over from an earlier formula). apply itself is right, so
finite differences disagree with the endpoints.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]
    s: Differentiable[Float64]


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]]


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(y=np.sin(inputs.x) * inputs.s)


def _dy_dx(inputs: InputSchema) -> np.ndarray:
    return np.cos(inputs.x) * inputs.s + 0.1 * inputs.x  # wrong on purpose


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    ct = np.asarray(cotangent_vector["y"])
    out = {"x": ct * _dy_dx(inputs), "s": np.sum(ct * np.sin(inputs.x))}
    return {k: v for k, v in out.items() if k in vjp_inputs}


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    dy = np.zeros_like(inputs.x)
    if "x" in jvp_inputs:
        dy = dy + _dy_dx(inputs) * np.asarray(tangent_vector["x"])
    if "s" in jvp_inputs:
        dy = dy + np.sin(inputs.x) * float(tangent_vector["s"])
    return {"y": dy}
