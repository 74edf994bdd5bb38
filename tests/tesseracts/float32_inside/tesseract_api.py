"""Float32 inputs, a Float64 output computed in float32: tesseract-core's vectoradd pattern.

    result = a * s + b        (a, b: Float32 arrays, s: Float32 scalar)

NumPy keeps float32 through the arithmetic, so ``result`` carries float32
round-off although the schema declares it Float64 and it arrives as float64.
Finite differences of it are off by about 2e-5 relative, which an error
estimate that trusts the output's dtype (float64) puts at 1e-12: a correct
``jacobian`` (exactly ``s`` on the diagonal) would be reported wrong.
"""

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float32, Float64


class InputSchema(BaseModel):
    a: Differentiable[Array[(None,), Float32]] = Field(description="A vector.")
    b: Differentiable[Array[(None,), Float32]] = Field(description="A vector.")
    s: Differentiable[Float32] = Field(default=1.0, description="A scalar.")


class OutputSchema(BaseModel):
    result: Differentiable[Array[(None,), Float64]] = Field(description="s a + b.")


def apply(inputs: InputSchema) -> OutputSchema:
    return OutputSchema(result=inputs.a * inputs.s + inputs.b)


def jacobian(inputs: InputSchema, jac_inputs: set[str], jac_outputs: set[str]):
    n = len(inputs.a)
    partials = {
        "a": np.eye(n) * inputs.s,
        "b": np.eye(n),
        "s": np.asarray(inputs.a, np.float64),
    }
    return {"result": {p: partials[p] for p in jac_inputs}}
