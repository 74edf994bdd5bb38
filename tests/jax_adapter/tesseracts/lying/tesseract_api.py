"""A Tesseract whose abstract_eval disagrees with apply (one element too many).

Used to check that a wrong ``abstract_eval`` gives a clear error under
``jit`` instead of wrong numbers.
"""

from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64, ShapeDType


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]


class OutputSchema(BaseModel):
    y: Differentiable[Array[(None,), Float64]]


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(y=2.0 * inputs.x)


def abstract_eval(abstract_inputs):
    (n,) = abstract_inputs.x.shape
    return {"y": ShapeDType(shape=(n + 1,), dtype="float64")}
