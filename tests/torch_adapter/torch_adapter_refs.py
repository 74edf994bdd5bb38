"""Pure-torch re-implementations of the example Tesseracts, and input builders.

The analytic references of the torch adapter tests: the same formulas as
examples/*/tesseract_api.py, written in torch so that torch's own autograd gives
exact gradients, Jacobians and Hessians to compare with.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from helpers import example_inputs

F64 = torch.float64

ROSEN_X = [-1.2, 1.0, 0.5, 2.0]


def rosenbrock_ref(
    x: torch.Tensor, a: float = 1.0, b: float = 100.0
) -> dict[str, torch.Tensor]:
    r = torch.cat([a - x[:-1], math.sqrt(b) * (x[1:] - x[:-1] ** 2)])
    return {"loss": (r**2).sum(), "residuals": r}


def rosenbrock_inputs(x: torch.Tensor, a: Any = 1.0, b: Any = 100.0) -> dict[str, Any]:
    return {"x": x, "a": a, "b": b}


def float32_ref(
    x: torch.Tensor, w: torch.Tensor, shift: torch.Tensor
) -> dict[str, torch.Tensor]:
    y = w * torch.sin(x) + shift
    return {"y": y, "energy": 0.5 * (y**2).sum()}


def float32_values() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, w, shift of examples/float32 as float32 tensors."""
    return (
        torch.tensor([0.1, 0.7, -1.3], dtype=torch.float32),
        torch.tensor(1.5, dtype=torch.float32),
        torch.tensor([0.0, 0.5, -0.5], dtype=torch.float32),
    )


_ACTIVATIONS = {"tanh": torch.tanh, "sin": torch.sin, "identity": lambda v: v}
NESTED_KEYS = ("alpha", "beta.v{1}")


def nested_ref(inputs: dict[str, Any]) -> dict[str, Any]:
    """examples/nested in torch; any leaf may be a tensor or a plain value."""

    def as_t(v: Any) -> torch.Tensor:
        if isinstance(v, torch.Tensor):
            return v
        return torch.as_tensor(np.asarray(v, dtype=np.float64))

    params = inputs["params"]
    keys = sorted(params)
    h = sum((i + 1.0) * as_t(params[k]) for i, k in enumerate(keys))
    config = inputs.get("config", {})
    for _ in range(config.get("repeat", 1)):
        for layer in inputs["layers"]:
            act = _ACTIVATIONS[layer["activation"]]
            h = act(as_t(layer["w"]) @ h + as_t(layer["b"])) * as_t(layer["scale"])
    out = h + config.get("offset", 0.0)
    return {"out": out, "summary": {"sumsq": (out**2).sum(), "mean": out.mean()}}


def nested_tensors() -> dict[str, Any]:
    """The differentiable leaves of examples/nested as float64 tensors (no grad)."""
    base = example_inputs("nested")
    return {
        "params": {k: torch.tensor(v, dtype=F64) for k, v in base["params"].items()},
        "w": [torch.tensor(layer["w"], dtype=F64) for layer in base["layers"]],
        "b": [torch.tensor(layer["b"], dtype=F64) for layer in base["layers"]],
    }


def nested_inputs(
    params: dict[str, Any], w: list[Any], b: list[Any] | None = None
) -> dict[str, Any]:
    """The example inputs of examples/nested with the given differentiable leaves."""
    inputs = copy.deepcopy(example_inputs("nested"))
    inputs["params"] = dict(params)
    for i, layer in enumerate(inputs["layers"]):
        layer["w"] = w[i]
        if b is not None:
            layer["b"] = b[i]
    return inputs


def flat_tensors(tree: Any) -> torch.Tensor:
    """All tensor leaves of a (nested) tree, flattened and concatenated."""
    leaves = torch.utils._pytree.tree_leaves(tree)
    return torch.cat([torch.as_tensor(v).reshape(-1).to(F64) for v in leaves])
