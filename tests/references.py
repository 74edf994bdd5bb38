"""Pure-JAX re-implementations of the example Tesseracts: the exact derivatives tests compare against."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_ACT = {"tanh": jnp.tanh, "sin": jnp.sin, "identity": lambda v: v}


def rosenbrock(x, a=1.0, b=100.0):
    r = jnp.concatenate([a - x[:-1], jnp.sqrt(b) * (x[1:] - x[:-1] ** 2)])
    return {"loss": jnp.sum(r**2), "residuals": r}


def float32(x, w, shift):
    y = w * jnp.sin(x) + shift
    return {"y": y, "energy": 0.5 * jnp.sum(y**2)}


def nested(inputs):
    """The `nested` example on a nested dict (differentiable leaves may be tracers)."""
    params = inputs["params"]
    keys = sorted(params)
    h = sum((i + 1.0) * params[k] for i, k in enumerate(keys))
    config = {"label": "nested", "repeat": 1, "offset": 0.0, **inputs.get("config", {})}
    for _ in range(config["repeat"]):
        for layer in inputs["layers"]:
            act = _ACT[layer.get("activation", "tanh")]
            h = act(layer["w"] @ h + layer["b"]) * jnp.asarray(layer["scale"])
    out = h + config["offset"]
    return {"out": out, "summary": {"sumsq": jnp.sum(out**2), "mean": jnp.mean(out)}}


def nested_flat(flat_diff, build):
    """`nested` as a function of {path: array} for the differentiable paths; `build` unflattens."""
    out = nested(build(flat_diff))
    return {
        "out": out["out"],
        "summary.{sumsq}": out["summary"]["sumsq"],
        "summary.{mean}": out["summary"]["mean"],
    }


def jacobian_by_path(fun, x: dict):
    """{out: {in: J}} of a function {path: array} -> {path: array}, by jax.jacrev."""
    jac = jax.jacrev(fun)(x)
    return {o: {p: jac[o][p] for p in x} for o in jac}
