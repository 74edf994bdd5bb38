"""Smooth analytic functions in float64 and float32, for checking error estimates.

Each output mixes the elements of its input (a dense Jacobian) through
functions whose derivatives grow at different rates, at magnitudes from 1e-3
to 1e3 (``scale``), so finite differences meet both truncation and rounding:

    u = x * scale                      (elementwise)
    y_i = exp(0.3 u_i) sin(u_{i+1}) + u_i^3 / 50 + log(1 + u_i^2) * cos(u_{i-1})

(indices cyclic), computed in float64 (``x64 -> y64``) and float32
(``x32 -> y32``). Only ``apply``: derivatives come from finite differences.
"""

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float32, Float64


class InputSchema(BaseModel):
    x64: Differentiable[Array[(None,), Float64]] = Field(description="float64 input.")
    x32: Differentiable[Array[(None,), Float32]] = Field(description="float32 input.")
    scale: float = Field(default=1.0, description="Inputs are multiplied by this.")


class OutputSchema(BaseModel):
    y64: Differentiable[Array[(None,), Float64]] = Field(description="float64 output.")
    y32: Differentiable[Array[(None,), Float32]] = Field(description="float32 output.")


def smooth(x: np.ndarray, scale: float) -> np.ndarray:
    u = x * x.dtype.type(scale)
    nxt, prev = np.roll(u, -1), np.roll(u, 1)
    c = x.dtype.type
    return (
        np.exp(c(0.3) * u) * np.sin(nxt)
        + u**3 / c(50.0)
        + np.log1p(u * u) * np.cos(prev)
    )


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(
        y64=smooth(inputs.x64, inputs.scale), y32=smooth(inputs.x32, inputs.scale)
    )
