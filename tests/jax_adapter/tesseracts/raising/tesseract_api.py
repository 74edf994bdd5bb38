"""A Tesseract that fails: ``apply`` refuses negative inputs, the VJP always fails.

Used to check that a Tesseract's own error message reaches the JAX user,
eagerly and from inside ``jit`` callbacks.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64, ShapeDType


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]]


def apply(inputs: InputSchema) -> OutputSchema:
    if np.any(inputs.x < 0):
        raise ValueError(
            f"raising-tesseract: x must be non-negative, got min {inputs.x.min()}"
        )
    return OutputSchema(y=np.sqrt(inputs.x))


def abstract_eval(abstract_inputs):
    return {"y": ShapeDType(shape=abstract_inputs.x.shape, dtype="float64")}


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    raise RuntimeError("raising-tesseract: the VJP endpoint is broken on purpose")
