"""A correct float32 Tesseract whose outputs sit near 2e3: exact endpoints, noisy finite differences.

    y = w * sin(x) + shift        (float32; shift about 2e3, w = 1.5 by default)

The gradient endpoints are exact (``w * cos(x)``), but central differences of
``apply`` in float32 are off by about 1e-2 relative here (the outputs' round-off,
2e3 * 6e-8, divided by a step of about 5e-3 * |x|): more than a fixed
tolerance of 2.4e-3 allows, so a checker that ignores that noise reports a
correct Tesseract wrong. With a tiny ``w`` the noise swamps the derivative
altogether and no finite difference can judge it.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float32


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float32]] = Field(description="Angles.")
    shift: Array[(None,), Float32] = Field(description="Large offsets.")
    w: float = Field(default=1.5, description="Amplitude.")


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float32]] = Field(description="w sin(x) + shift.")


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(y=np.float32(inputs.w) * np.sin(inputs.x) + inputs.shift)


def _slope(inputs: InputSchema) -> np.ndarray:
    return (np.float32(inputs.w) * np.cos(inputs.x)).astype(np.float32)


def jacobian(inputs: InputSchema, jac_inputs: set[str], jac_outputs: set[str]):
    return {"y": {"x": np.diag(_slope(inputs))}}


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    return {"x": (_slope(inputs) * cotangent_vector["y"]).astype(np.float32)}


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    return {"y": (_slope(inputs) * tangent_vector["x"]).astype(np.float32)}
