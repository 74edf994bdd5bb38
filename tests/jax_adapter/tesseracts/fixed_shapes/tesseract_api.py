"""Fixed output shapes, reverse mode only, no abstract_eval.

Its OutputSchema fixes every output's shape, so ``jit`` needs neither
``abstract_eval`` nor an earlier eager call. Its only gradient endpoint is
``vector_jacobian_product``: reverse mode works, forward mode must say that
it needs a JVP or jacobian endpoint.

    y = scale * x**2      total = sum(y)      note = "fixed"      count = 3
"""

from typing import Any

import numpy as np
from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(3,), Float64]]
    scale: float = 2.0


class OutputSchema(BaseModel):
    y: Differentiable[Array[(3,), Float64]]
    total: Differentiable[Float64]
    note: str
    count: int


def apply(inputs: InputSchema) -> OutputSchema:
    y = inputs.scale * inputs.x**2
    return OutputSchema(y=y, total=np.sum(y), note="fixed", count=3)


def vector_jacobian_product(
    inputs: InputSchema,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
):
    dy_dx = 2.0 * inputs.scale * inputs.x
    gy = np.zeros(3)
    if "y" in vjp_outputs:
        gy = gy + np.asarray(cotangent_vector["y"])
    if "total" in vjp_outputs:
        gy = gy + float(cotangent_vector["total"])
    return {"x": gy * dy_dx}
