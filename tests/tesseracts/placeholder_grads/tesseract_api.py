"""Hand-written gradients that answer a partial request with placeholders.

Written the way many Tesseracts are (the references' own ``nested_tesseract``
fixtures among them): the VJP starts from ``{input: 0.0 for each requested
input}`` and fills in only the pairs where both the input and the output were
requested; the JVP does the same per output. A request that leaves out an
output (VJP) or an input (JVP) connected to a requested array therefore gets
a scalar ``0.0`` for that array, which tesseract-core's validation refuses
("Array has wrong number of dimensions"). Asked for every differentiable
output (zero cotangents) or every differentiable input (zero tangents), it
answers correctly (its VJP refuses a negative ``label.scale`` whatever is
asked). Everything is float32, fields have defaults, and one model holds a
``str``.

    gains.k  = label.scale * k**2 + offset     d/dk = 2 scale k
    signal.u = u * (bias + 1)                  d/du = diag(bias + 1)
"""

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float32, ShapeDType


class Gains(BaseModel):
    k: Differentiable[Float32] = Field(default=1.0, description="Gain.")
    offset: Float32 = Field(description="Added to the squared gain.")


class Signal(BaseModel):
    u: Differentiable[Array[(None,), Float32]] = Field(description="Signal (3 values).")
    bias: Array[(3,), Float32] = Field(
        default=[0.5, 1.0, 1.5], description="Per-channel bias."
    )


class Label(BaseModel):
    name: str = Field(description="A name, echoed back.")
    repeat: int = Field(default=1, description="Unused count.")
    scale: float = Field(default=1.0, description="Scale of the squared gain.")


class InputSchema(BaseModel):
    gains: Gains
    signal: Signal
    label: Label


class GainsOut(BaseModel):
    k: Differentiable[Float32]


class SignalOut(BaseModel):
    u: Differentiable[Array[(None,), Float32]]


class OutputSchema(BaseModel):
    gains: GainsOut
    signal: SignalOut
    name: str


def _gain(inputs: InputSchema) -> np.ndarray:
    # pydantic does not validate a default: the list default stays a list
    return np.asarray(inputs.signal.bias, dtype=np.float32) + 1


def apply(inputs: InputSchema) -> OutputSchema:
    g = inputs.gains
    k = np.float32(inputs.label.scale) * g.k**2 + g.offset
    return OutputSchema(
        gains=GainsOut(k=k),
        signal=SignalOut(u=inputs.signal.u * _gain(inputs)),
        name=inputs.label.name,
    )


def abstract_eval(abstract_inputs):
    return {
        "gains": {"k": ShapeDType(shape=(), dtype="float32")},
        "signal": {
            "u": ShapeDType(shape=abstract_inputs.signal.u.shape, dtype="float32")
        },
        "name": "",
    }


def _dk(inputs: InputSchema) -> np.float32:
    return np.float32(2 * inputs.label.scale) * inputs.gains.k


def vector_jacobian_product(inputs, vjp_inputs, vjp_outputs, cotangent_vector):
    if inputs.label.scale < 0:
        raise ValueError("this VJP is only derived for a non-negative label.scale")
    grads = {path: 0.0 for path in vjp_inputs}
    if "gains.k" in vjp_inputs and "gains.k" in vjp_outputs:
        grads["gains.k"] = _dk(inputs) * cotangent_vector["gains.k"]
    if "signal.u" in vjp_inputs and "signal.u" in vjp_outputs:
        grads["signal.u"] = _gain(inputs) * cotangent_vector["signal.u"]
    return grads


def jacobian_vector_product(inputs, jvp_inputs, jvp_outputs, tangent_vector):
    tangents = {path: 0.0 for path in jvp_outputs}
    if "gains.k" in jvp_inputs and "gains.k" in jvp_outputs:
        tangents["gains.k"] = _dk(inputs) * tangent_vector["gains.k"]
    if "signal.u" in jvp_inputs and "signal.u" in jvp_outputs:
        tangents["signal.u"] = _gain(inputs) * tangent_vector["signal.u"]
    return tangents
