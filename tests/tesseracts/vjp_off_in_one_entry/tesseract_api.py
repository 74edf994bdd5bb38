"""A VJP that is wrong by 0.1% in one entry only: the kind of slip a checker must catch.

    y_i = x_i^2 + 0.5 x_{i+1}     (indices cyclic, float64)

``vector_jacobian_product`` is right except that the gradient of ``x[2]`` is
0.1% too large; there is no JVP or jacobian endpoint.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]] = Field(description="Inputs.")


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]] = Field(description="Outputs.")


def apply(inputs: InputSchema) -> OutputSchema:
    x = inputs.x
    return OutputSchema(y=x**2 + 0.5 * np.roll(x, -1))


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    x, ct = inputs.x, np.asarray(cotangent_vector["y"])
    grad = 2.0 * x * ct + 0.5 * np.roll(ct, 1)
    grad[2] *= 1.001  # wrong on purpose, by a thousandth
    return {"x": grad}
