"""A Tesseract that fails on request, to check its error messages reach torch users.

    y = x**2        (Differentiable; analytic VJP and JVP)

``fail`` selects where it raises: "never", "apply" or "vjp".
"""

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]
    fail: Literal["never", "apply", "vjp"] = "never"


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]]


def apply(inputs: InputSchema) -> OutputSchema:
    if inputs.fail == "apply":
        raise ValueError("torch_raising: apply refused these inputs on purpose")
    return OutputSchema(y=inputs.x**2)


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    if inputs.fail == "vjp":
        raise ValueError("torch_raising: vector_jacobian_product refused on purpose")
    return {"x": 2.0 * inputs.x * np.asarray(cotangent_vector["y"])}


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    return {"y": 2.0 * inputs.x * np.asarray(tangent_vector["x"])}
