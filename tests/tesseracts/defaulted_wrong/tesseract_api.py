"""A VJP that is wrong only for a Differentiable input left at its default.

    y = s * x        (s defaults to 2.0; the example inputs give x only)

The VJP's gradient of ``s`` is twice too large; the gradient of ``x`` is right.
A checker that differentiates only the inputs the example file names never
looks at ``s``.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]] = Field(description="Values.")
    s: Differentiable[Float64] = Field(default=2.0, description="Scale.")


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]] = Field(description="s * x.")


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(y=inputs.s * inputs.x)


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    ct = np.asarray(cotangent_vector["y"])
    out = {}
    if "x" in vjp_inputs:
        out["x"] = inputs.s * ct
    if "s" in vjp_inputs:
        out["s"] = 2.0 * np.sum(ct * inputs.x)  # wrong on purpose: twice too large
    return out
