"""A jacobian endpoint that returns the transpose: the wrong shape, a common slip.

    y = A x        (x: 3 elements, y: 2, float64)

``jacobian`` returns ``A.T`` (3 x 2) where ``dy/dx`` is ``A`` (2 x 3), which
the schema's free shapes let through its validation; the
VJP endpoint is right. A check must name the shape, not only "disagrees".
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64

A = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, 4.0]])


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]] = Field(description="Inputs.")


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]] = Field(description="Outputs.")


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(y=A @ inputs.x)


def jacobian(inputs: InputSchema, jac_inputs: set[str], jac_outputs: set[str]):
    return {"y": {"x": A.T.copy()}}  # transposed, on purpose


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    return {"x": A.T @ np.asarray(cotangent_vector["y"])}
