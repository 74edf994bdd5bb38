"""Returns its input and one array twice, and passes cotangents straight through.

Written the way quick Tesseracts are: the identity is ``return x``, and the
VJP of the identity hands back the cotangent it was given. A tensor made from
such a result without a copy would share memory with the caller's input, its
gradient, or another output.

    same = x,  again = x (the same array),  grad: d same / dx = I
"""

from pydantic import BaseModel
from tesseract_core.runtime import Array, Differentiable, Float64


class InputSchema(BaseModel):
    x: Differentiable[Array[(None,), Float64]]


class OutputSchema(BaseModel):
    same: Differentiable[Array[(None,), Float64]]
    again: Differentiable[Array[(None,), Float64]]


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(same=inputs.x, again=inputs.x)


def vector_jacobian_product(inputs, vjp_inputs, vjp_outputs, cotangent_vector):
    if list(vjp_outputs) == ["same"]:
        return {"x": cotangent_vector["same"]}  # the cotangent itself
    return {"x": sum(cotangent_vector[o] for o in vjp_outputs)}
