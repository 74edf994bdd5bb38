"""Cheap Tesseract for overhead benchmarks: every endpoint is O(n) in time and memory.

The maths is as small as a gradient step can be, so the time and memory a
benchmark measures through it are those of the calls and the data passes,
not of the simulator:

    y    = w * x                   (a differentiable array output)
    loss = 0.5 * w * sum(x**2)     (a differentiable scalar output)

Each endpoint allocates one array of the size of ``x`` at most (``y`` in
``apply``, the JVP of ``y``, the VJP for ``x``); ``loss`` and its derivatives
are dot products, which allocate nothing. ``w`` is static.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64, ShapeDType


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]] = Field(
        description="Point at which to evaluate, any length."
    )
    w: float = Field(default=2.0, description="Scale (static).")


class OutputSchema(BaseModel):
    loss: Differentiable[Float64] = Field(description="0.5 * w * sum(x**2).")
    y: Differentiable[Array[(None,), Float64]] = Field(description="w * x.")


def apply(inputs: InputSchema) -> OutputSchema:
    x, w = inputs.x, inputs.w
    return OutputSchema(loss=0.5 * w * np.dot(x, x), y=w * x)


def abstract_eval(abstract_inputs):
    return {
        "loss": ShapeDType(shape=(), dtype="float64"),
        "y": ShapeDType(shape=abstract_inputs.x.shape, dtype="float64"),
    }


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    x, w = inputs.x, inputs.w
    t = np.asarray(tangent_vector["x"])
    out = {}
    if "loss" in jvp_outputs:
        out["loss"] = w * np.dot(x, t)
    if "y" in jvp_outputs:
        out["y"] = w * t
    return out


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    x, w = inputs.x, inputs.w
    # w * (c_loss * x + c_y), built in one buffer without temporaries
    c_loss = float(cotangent_vector["loss"]) if "loss" in vjp_outputs else 0.0
    g = np.multiply(x, c_loss)
    if "y" in vjp_outputs:
        g += np.asarray(cotangent_vector["y"])
    g *= w
    return {"x": g}
