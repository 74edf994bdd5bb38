"""Chained Rosenbrock function with hand-written derivative endpoints.

The reference Tesseract of the test suite: every gradient endpoint
(``jacobian``, ``jacobian_vector_product``, ``vector_jacobian_product``) and
``abstract_eval`` is analytic, so finite differences and the JAX/PyTorch
adapters can be compared against exact values.

    residuals = [a - x_0, ..., a - x_{n-2}, s (x_1 - x_0^2), ..., s (x_{n-1} - x_{n-2}^2)]
    loss      = sum(residuals**2)        with s = sqrt(b)
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64, ShapeDType


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]] = Field(
        description="Point at which to evaluate, at least 2 elements."
    )
    a: float = Field(default=1.0, description="Location of the minimum.")
    b: float = Field(default=100.0, description="Curvature of the valley.")


class OutputSchema(BaseModel):
    loss: Differentiable[Float64] = Field(description="Rosenbrock value.")
    residuals: Differentiable[Array[(None,), Float64]] = Field(
        description="Residuals whose squared sum is the loss, 2 (n - 1) elements."
    )


def _residuals(x: np.ndarray, a: float, b: float) -> np.ndarray:
    s = np.sqrt(b)
    return np.concatenate([a - x[:-1], s * (x[1:] - x[:-1] ** 2)])


def _residuals_jacobian(x: np.ndarray, b: float) -> np.ndarray:
    n = x.shape[0]
    s = np.sqrt(b)
    jac = np.zeros((2 * (n - 1), n))
    idx = np.arange(n - 1)
    jac[idx, idx] = -1.0
    jac[n - 1 + idx, idx + 1] = s
    jac[n - 1 + idx, idx] = -2.0 * s * x[:-1]
    return jac


def _full_jacobian(inputs: InputSchema) -> dict[str, np.ndarray]:
    r = _residuals(inputs.x, inputs.a, inputs.b)
    jr = _residuals_jacobian(inputs.x, inputs.b)
    return {"residuals": jr, "loss": 2.0 * r @ jr}


def apply(inputs: InputSchema) -> OutputSchema:
    r = _residuals(inputs.x, inputs.a, inputs.b)
    return OutputSchema(loss=np.sum(r**2), residuals=r)


def abstract_eval(abstract_inputs):
    n = abstract_inputs.x.shape[0]
    return {
        "loss": ShapeDType(shape=(), dtype="float64"),
        "residuals": ShapeDType(shape=(2 * (n - 1),), dtype="float64"),
    }


def jacobian(inputs: InputSchema, jac_inputs: set[str], jac_outputs: set[str]):
    full = _full_jacobian(inputs)
    return {out: {"x": full[out]} for out in jac_outputs if "x" in jac_inputs}


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    full = _full_jacobian(inputs)
    t = np.asarray(tangent_vector["x"])
    return {out: full[out] @ t for out in jvp_outputs}


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    full = _full_jacobian(inputs)
    vjp = np.zeros_like(inputs.x)
    for out in vjp_outputs:
        vjp = vjp + np.tensordot(
            np.asarray(cotangent_vector[out]),
            full[out],
            axes=np.ndim(cotangent_vector[out]),
        )
    return {"x": vjp}
