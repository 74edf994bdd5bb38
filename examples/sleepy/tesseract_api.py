"""A stand-in for an expensive simulator: ``apply`` sleeps before it answers.

Used by the scale-out benchmark and tutorial: finite-difference sweeps over it
are dominated by the sleep, so parallel evaluation (threads against a server
with several workers, or a dask cluster) shows its speed-up clearly. Only
``apply``; no gradient endpoints, no ``abstract_eval``.

    y = scale * sin(x),  total = sum(y)
"""

import time

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]
    scale: Differentiable[Float64] = Field(default=1.0)
    delay: float = Field(default=0.04, description="Seconds apply sleeps.")


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]]
    total: Differentiable[Float64]


def apply(inputs: InputSchema) -> OutputSchema:
    time.sleep(inputs.delay)
    y = inputs.scale * np.sin(inputs.x)
    return OutputSchema(y=y, total=np.sum(y))
