"""A small network with nested inputs and only an ``apply`` endpoint.

No gradient endpoints and no ``abstract_eval``: this is the Tesseract that
tesseract-jax and tesseract-torch cannot differentiate, and that tess_ad
differentiates through finite differences. Its schema mixes every kind of
leaf the schema-leaf pytree has to handle:

* ``params``: a ``dict[str, Differentiable[Array]]`` (keys may hold dots and braces),
* ``layers``: a list of sub-models with differentiable (``w``, ``b``) and static
  (``activation``, ``scale``) leaves,
* ``config``: static settings (an int, a string, a plain float).

    h_0 = sum_k weight_k * params[k]          (weight_k = k-th key in sorted order + 1)
    h_{i+1} = act_i(w_i @ h_i + b_i) * scale_i
    out = h_L + config.offset
"""

import numpy as np
from pydantic import BaseModel, Field
from tesseract_core.runtime import Array, Differentiable, Float64

_ACTIVATIONS = {"tanh": np.tanh, "sin": np.sin, "identity": lambda v: v}


class Layer(BaseModel):
    w: Differentiable[Array[(None, None), Float64]]
    b: Differentiable[Float64]
    activation: str = Field(default="tanh", description="tanh, sin or identity.")
    scale: Array[(None,), Float64] = Field(description="Static per-row scale.")


class Config(BaseModel):
    label: str = "nested"
    repeat: int = Field(default=1, description="Apply the layer stack this many times.")
    offset: float = 0.0


class InputSchema(BaseModel):
    params: dict[str, Differentiable[Array[(None,), Float64]]]
    layers: list[Layer]
    config: Config = Config()


class Info(BaseModel):
    label: str
    n_layers: int
    positive: Array[(None,), "bool"]


class OutputSchema(BaseModel):
    out: Differentiable[Array[(None,), Float64]]
    summary: dict[str, Differentiable[Float64]]
    info: Info


def apply(inputs: InputSchema) -> OutputSchema:
    keys = sorted(inputs.params)
    h = sum((i + 1.0) * inputs.params[k] for i, k in enumerate(keys))
    for _ in range(inputs.config.repeat):
        for layer in inputs.layers:
            act = _ACTIVATIONS[layer.activation]
            h = act(layer.w @ h + layer.b) * layer.scale
    out = h + inputs.config.offset
    return OutputSchema(
        out=out,
        summary={"sumsq": np.sum(out**2), "mean": np.mean(out)},
        info=Info(
            label=inputs.config.label,
            n_layers=len(inputs.layers),
            positive=out > 0,
        ),
    )
