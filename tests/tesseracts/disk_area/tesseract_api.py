"""Disks whose area the InputSchema's validator derives from the radius: state made by a validator.

Written the way such schemas are written: ``area`` is a field a
``model_validator`` fills from ``radius`` (normalise, precompute), ``apply``
reads ``area``, and the same validator refuses radii of ``max_radius`` or more
(a check). The gradient endpoints are tess_ad's drop-in finite-difference
helpers, so ``d area / d radius = 2 pi radius`` comes out right only if every
perturbed point is validated again, as tesseract-core's own helpers do.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator
from tesseract_core.runtime import Array, Differentiable, Float64

from tess_ad import (
    finite_difference_jacobian,
    finite_difference_jvp,
    finite_difference_vjp,
)


class InputSchema(BaseModel):
    radius: Differentiable[Array[(None,), Float64]] = Field(description="Radii.")
    max_radius: float = Field(default=10.0, description="Radii must stay below.")
    area: Array[(None,), Float64] | None = Field(
        default=None, description="Derived from radius by the validator."
    )

    @model_validator(mode="after")
    def _derive_area(self):
        if not isinstance(self.radius, np.ndarray):
            return self  # abstract evaluation: shapes only
        if np.any(self.radius >= self.max_radius):
            raise ValueError(f"every radius must be below max_radius={self.max_radius}")
        self.area = np.pi * self.radius**2
        return self


class OutputSchema(BaseModel):
    area: Differentiable[Array[(None,), Float64]] = Field(description="Areas.")


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(area=inputs.area)


def jacobian(inputs: InputSchema, jac_inputs: set[str], jac_outputs: set[str]):
    return finite_difference_jacobian(apply, inputs, jac_inputs, jac_outputs)


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    return finite_difference_vjp(
        apply, inputs, vjp_inputs, vjp_outputs, cotangent_vector
    )


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    return finite_difference_jvp(apply, inputs, jvp_inputs, jvp_outputs, tangent_vector)
