"""Volumetric-mesh statistics with gradients from finite differences (tess_ad's drop-in helpers).

The Tesseract only knows how to compute its outputs; its gradient endpoints
are finite differences of ``apply``. The algorithm is chosen per call with the
``fd_algorithm`` input field ("central", "forward" or "stochastic"), so one
served instance can be asked for each.

Outputs: the coordinates of the first mesh point and the barycenter of all
points, both linear in ``mesh.points``.
"""

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator
from tesseract_core.runtime import Array, Differentiable, Float64, Int32, ShapeDType

from tess_ad import (
    finite_difference_jacobian,
    finite_difference_jvp,
    finite_difference_vjp,
)

FDAlgorithm = Literal["central", "forward", "stochastic"]
FD_STEP = None  # scale-aware steps (tess_ad default); a float gives an absolute step


class VolumetricMeshData(BaseModel):
    """An unstructured volumetric mesh (shapes checked by the validators)."""

    n_points: int
    n_cells: int
    points: Differentiable[Array[(None, 3), Float64]]
    num_points_per_cell: Array[(None,), Float64] = Field(
        description="Number of points of each cell, n_cells entries."
    )
    cell_connectivity: Array[(None,), Int32] = Field(
        description="Point indices of every cell, sum(num_points_per_cell) entries."
    )
    cell_data: dict[str, Array[(None, None), Float64]]
    point_data: dict[str, Array[(None, None), Float64]]

    @model_validator(mode="after")
    def _check_sizes(self):
        if not isinstance(self.num_points_per_cell, np.ndarray):
            return self  # abstract evaluation: shapes only
        if len(self.num_points_per_cell) != self.n_cells:
            raise ValueError(
                f"num_points_per_cell must have n_cells={self.n_cells} entries"
            )
        expected = int(np.sum(self.num_points_per_cell))
        if len(self.cell_connectivity) != expected:
            raise ValueError(f"cell_connectivity must have {expected} entries")
        return self


class InputSchema(BaseModel):
    mesh: VolumetricMeshData = Field(description="The mesh to summarise.")
    fd_algorithm: FDAlgorithm = Field(
        default="central",
        description="Finite-difference algorithm of the gradient endpoints.",
    )


class SummaryStatistics(BaseModel):
    first_point_coordinates: Differentiable[Array[(3,), Float64]]
    barycenter: Differentiable[Array[(3,), Float64]]


class OutputSchema(BaseModel):
    statistics: SummaryStatistics


def apply(inputs: InputSchema) -> OutputSchema:
    points = inputs.mesh.points
    return OutputSchema(
        statistics=SummaryStatistics(
            first_point_coordinates=points[0], barycenter=points.mean(axis=0)
        )
    )


def abstract_eval(abstract_inputs):
    dim = abstract_inputs.mesh.points.shape[1]
    dtype = abstract_inputs.mesh.points.dtype
    stat = ShapeDType(shape=(dim,), dtype=dtype)
    return {"statistics": {"first_point_coordinates": stat, "barycenter": stat}}


def jacobian(inputs: InputSchema, jac_inputs: set[str], jac_outputs: set[str]):
    return finite_difference_jacobian(
        apply,
        inputs,
        jac_inputs,
        jac_outputs,
        algorithm=inputs.fd_algorithm,
        eps=FD_STEP,
    )


def jacobian_vector_product(
    inputs: InputSchema,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
):
    return finite_difference_jvp(
        apply,
        inputs,
        jvp_inputs,
        jvp_outputs,
        tangent_vector,
        algorithm=inputs.fd_algorithm,
        eps=FD_STEP,
    )


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    return finite_difference_vjp(
        apply,
        inputs,
        vjp_inputs,
        vjp_outputs,
        cotangent_vector,
        algorithm=inputs.fd_algorithm,
        eps=FD_STEP,
    )
