"""An apply that works at the example inputs but raises at a perturbed point.

``x`` must stay at or below ``limit``; the example inputs put ``x[1]`` on the
limit, so the finite-difference sweep fails partway (at the first point that
moves ``x[1]`` up). ``message=""`` makes it raise an exception without a
message, as careless code does.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]] = Field(description="Values.")
    limit: float = Field(default=2.0, description="Largest allowed value.")
    message: str = Field(default="x is beyond the limit", description="Error text.")


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]] = Field(description="x squared.")


def apply(inputs: InputSchema) -> OutputSchema:
    if np.any(inputs.x > inputs.limit):
        raise ValueError(inputs.message) if inputs.message else ValueError()
    return OutputSchema(y=inputs.x**2)


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    return {"x": 2.0 * inputs.x * cotangent_vector["y"]}
