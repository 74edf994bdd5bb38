"""A Tesseract whose JVP alone is wrong: `tess-ad check` must not let it hide.

y = sin(x) * s. The jacobian and VJP endpoints are right; the JVP drops the
factor s from dy/dx. Adapters in reverse mode (jax.vjp, backward) use the
VJP, so only checking each endpoint on its own finds the slip.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]
    s: Differentiable[Float64]


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]]


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(y=np.sin(inputs.x) * inputs.s)


def jacobian(inputs: InputSchema, jac_inputs: set[str], jac_outputs: set[str]):
    blocks = {
        "x": np.diag(np.cos(inputs.x) * inputs.s),
        "s": np.sin(inputs.x),
    }
    return {"y": {k: v for k, v in blocks.items() if k in jac_inputs}}


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    ct = np.asarray(cotangent_vector["y"])
    out = {"x": ct * np.cos(inputs.x) * inputs.s, "s": np.sum(ct * np.sin(inputs.x))}
    return {k: v for k, v in out.items() if k in vjp_inputs}


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    dy = np.zeros_like(inputs.x)
    if "x" in jvp_inputs:
        dy = dy + np.cos(inputs.x) * np.asarray(tangent_vector["x"])  # wrong: no * s
    if "s" in jvp_inputs:
        dy = dy + np.sin(inputs.x) * float(tangent_vector["s"])
    return {"y": dy}
