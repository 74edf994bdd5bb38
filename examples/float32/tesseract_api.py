"""Single-precision Tesseract with analytic JVP and VJP.

Every array is float32, so the adapters must keep float32 in and out, and the
finite-difference core must pick steps suited to float32. It has no
``jacobian`` endpoint: a whole Jacobian has to be built from JVPs or VJPs.

    y = w * sin(x) + shift        (shift is a static float32 array)
    energy = 0.5 * sum(y**2)
"""

from typing import Any

import numpy as np
from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float32, ShapeDType


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float32]]
    w: Differentiable[Float32]
    shift: Array[(None,), Float32]


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float32]]
    energy: Differentiable[Float32]


def apply(inputs: InputSchema) -> OutputSchema:
    y = inputs.w * np.sin(inputs.x) + inputs.shift
    return OutputSchema(y=y, energy=np.float32(0.5) * np.sum(y**2))


def abstract_eval(abstract_inputs):
    return {
        "y": ShapeDType(shape=abstract_inputs.x.shape, dtype="float32"),
        "energy": ShapeDType(shape=(), dtype="float32"),
    }


def _partials(inputs: InputSchema):
    y = inputs.w * np.sin(inputs.x) + inputs.shift
    dy_dx = inputs.w * np.cos(inputs.x)  # diagonal
    dy_dw = np.sin(inputs.x)
    return y, dy_dx, dy_dw


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    y, dy_dx, dy_dw = _partials(inputs)
    dy = np.zeros_like(y)
    if "x" in jvp_inputs:
        dy = dy + dy_dx * np.asarray(tangent_vector["x"], dtype=np.float32)
    if "w" in jvp_inputs:
        dy = dy + dy_dw * np.float32(tangent_vector["w"])
    result = {"y": dy, "energy": np.sum(y * dy)}
    return {k: v for k, v in result.items() if k in jvp_outputs}


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    y, dy_dx, dy_dw = _partials(inputs)
    gy = np.zeros_like(y)
    if "y" in vjp_outputs:
        gy = gy + np.asarray(cotangent_vector["y"], dtype=np.float32)
    if "energy" in vjp_outputs:
        gy = gy + np.float32(cotangent_vector["energy"]) * y
    result = {"x": gy * dy_dx, "w": np.sum(gy * dy_dw)}
    return {k: v for k, v in result.items() if k in vjp_inputs}
