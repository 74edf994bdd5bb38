"""Element-wise Rosenbrock terms that accept any leading batch axes (NumPy broadcasting).

Written the way a vectorised simulator is: every array field is
``Array[..., Float64]``, the endpoints broadcast their inputs against each
other, and the VJP sums each gradient back to its input's shape (so an input
given with a leading axis of 1 gets the gradient summed over the batch, as
NumPy broadcasting implies). ``shift`` is a non-differentiable array, for the
vmap methods that treat those differently; ``delay`` makes every call sleep
(benchmarks). No ``jacobian`` endpoint: ``jacfwd`` goes through JVPs.

    result = (a - x)**2 + b * (y - x**2)**2 + shift
"""

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64, ShapeDType


class InputSchema(BaseModel):
    x: Differentiable[Array[..., Float64]] = Field(description="First coordinate(s).")
    y: Differentiable[Array[..., Float64]] = Field(description="Second coordinate(s).")
    shift: Array[..., Float64] = Field(default=0.0, description="Added to the result.")
    a: float = Field(default=1.0, description="Rosenbrock a.")
    b: float = Field(default=100.0, description="Rosenbrock b.")
    delay: float = Field(default=0.0, description="Seconds each call sleeps.")


class OutputSchema(BaseModel):
    result: Differentiable[Array[..., Float64]] = Field(description="The terms.")


def _partials(inputs: InputSchema):
    x, y, a, b = inputs.x, inputs.y, inputs.a, inputs.b
    dx = -2.0 * (a - x) - 4.0 * b * x * (y - x**2)
    dy = 2.0 * b * (y - x**2)
    return dx, dy


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched."""
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


def apply(inputs: InputSchema) -> OutputSchema:
    time.sleep(inputs.delay)
    x, y, a, b = inputs.x, inputs.y, inputs.a, inputs.b
    return OutputSchema(result=(a - x) ** 2 + b * (y - x**2) ** 2 + inputs.shift)


def abstract_eval(abstract_inputs):
    shape = np.broadcast_shapes(
        tuple(abstract_inputs.x.shape),
        tuple(abstract_inputs.y.shape),
        tuple(abstract_inputs.shift.shape),
    )
    return {"result": ShapeDType(shape=shape, dtype="float64")}


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    time.sleep(inputs.delay)
    dx, dy = _partials(inputs)
    shape = np.broadcast_shapes(dx.shape, np.shape(inputs.shift))
    out = np.zeros(shape)
    if "x" in jvp_inputs:
        out = out + dx * tangent_vector["x"]
    if "y" in jvp_inputs:
        out = out + dy * tangent_vector["y"]
    return {"result": out}


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    time.sleep(inputs.delay)
    dx, dy = _partials(inputs)
    ct = np.asarray(cotangent_vector["result"])
    out = {}
    if "x" in vjp_inputs:
        out["x"] = _unbroadcast(ct * dx, np.shape(inputs.x))
    if "y" in vjp_inputs:
        out["y"] = _unbroadcast(ct * dy, np.shape(inputs.y))
    return out
