"""An output that depends on the inputs but is not marked Differentiable.

    z = x * y   (differentiable)      metadata = x[:2] + y[:2]   (not marked)

``metadata`` has a real, non-zero derivative that the Tesseract does not
offer: the JAX adapter must give it a NaN tangent and refuse a cotangent on
it, never a silent zero. The gradient endpoints are hand-written, as people
write them: they answer only for ``z`` and ignore anything else.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, model_validator
from tesseract_core.runtime import Array, Differentiable, Float64, ShapeDType


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]
    y: Differentiable[Array[(None,), Float64]]

    @model_validator(mode="after")
    def _same_length(self):
        if self.x.shape != self.y.shape or self.x.shape[0] < 2:
            raise ValueError("x and y must have the same length, at least 2")
        return self


class OutputSchema(BaseModel):
    z: Differentiable[Array[(None,), Float64]]
    metadata: Array[(2,), Float64]


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(z=inputs.x * inputs.y, metadata=inputs.x[:2] + inputs.y[:2])


def abstract_eval(abstract_inputs):
    n = abstract_inputs.x.shape[0]
    return {
        "z": ShapeDType(shape=(n,), dtype="float64"),
        "metadata": ShapeDType(shape=(2,), dtype="float64"),
    }


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    dz = np.zeros_like(inputs.x)
    if "x" in jvp_inputs:
        dz = dz + inputs.y * tangent_vector["x"]
    if "y" in jvp_inputs:
        dz = dz + inputs.x * tangent_vector["y"]
    return {"z": dz}


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    ct = np.asarray(cotangent_vector["z"])
    grads = {"x": ct * inputs.y, "y": ct * inputs.x}
    return {k: v for k, v in grads.items() if k in vjp_inputs}
