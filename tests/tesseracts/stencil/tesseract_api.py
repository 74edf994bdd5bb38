"""A 1-D nonlinear stencil: each output entry depends on three neighbouring inputs.

    du_i = u_{i-1} - 2 u_i + u_{i+1} + u_i^3 / 3      (u_{-1} = u_n = 0)
    energy = sum(u_i^2) / 2

The Jacobian of ``du`` is tridiagonal (``1, u_i^2 - 2, 1``), the sparsity a
simulator on a grid has; ``energy`` depends on every input. Only ``apply``,
which sleeps ``delay`` seconds (benchmarks).
"""

import time

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    u: Differentiable[Array[(None,), Float64]] = Field(description="Grid values.")
    delay: float = Field(default=0.0, description="Seconds each call sleeps.")


class OutputSchema(BaseModel):
    du: Differentiable[Array[(None,), Float64]] = Field(description="Stencil.")
    energy: Differentiable[Float64] = Field(description="Half the squared norm.")


def apply(inputs: InputSchema) -> OutputSchema:
    time.sleep(inputs.delay)
    u = inputs.u
    padded = np.concatenate([[0.0], u, [0.0]])
    du = padded[:-2] - 2.0 * u + padded[2:] + u**3 / 3.0
    return OutputSchema(du=du, energy=0.5 * np.sum(u**2))
