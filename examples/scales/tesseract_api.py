"""Badly scaled inputs: elements near 1e6, 1 and 1e-6 side by side (a finite-difference stress test).

y = x**3 elementwise, so dy/dx = 3 x**2 is known exactly at every scale.
Only ``apply``: derivatives come from finite differences.
"""

from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]]


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(y=inputs.x**3)
