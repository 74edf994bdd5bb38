"""A VJP that returns NaN for one input element: a checker must call that wrong.

    y_i = sin(x_i) * s        (float64)

``vector_jacobian_product`` is right except that the gradient of ``x[1]`` is
NaN, the way a division by a zero norm or a failed linear solve leaves one
entry of a hand-written adjoint. NaN compares false with everything, so a
check written as ``|a - b| > tol`` lets it through.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]] = Field(description="Inputs.")
    s: float = Field(default=2.0, description="A constant factor.")


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]] = Field(description="Outputs.")


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(y=np.sin(inputs.x) * inputs.s)


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    ct = np.asarray(cotangent_vector["y"])
    grad = np.cos(inputs.x) * inputs.s * ct
    grad[1] = np.nan  # a failed solve, on purpose
    return {"x": grad}
