"""Pure-JAX references of the example Tesseracts, and the test cases built on them.

A *case* is one Tesseract plus everything a transformation test needs: the
differentiable leaves (a pytree), how to rebuild the full inputs around them
(static leaves closed over), a pure-JAX reference of the differentiable
outputs, a scalar loss and a vector readout of the outputs, and tolerances.
The same loss/readout functions are applied to the Tesseract's outputs and to
the reference's, so every transformation is compared leaf by leaf.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from helpers import example_inputs

HERE = Path(__file__).parent
TESSERACTS = HERE / "tesseracts"

# --------------------------------------------------------------------------
# References (formulas from examples/<name>/tesseract_api.py)
# --------------------------------------------------------------------------


def rosenbrock_ref(inputs: dict) -> dict:
    x, a, b = inputs["x"], inputs["a"], inputs["b"]
    r = jnp.concatenate([a - x[:-1], jnp.sqrt(b) * (x[1:] - x[:-1] ** 2)])
    return {"loss": jnp.sum(r**2), "residuals": r}


def float32_ref(inputs: dict) -> dict:
    y = inputs["w"] * jnp.sin(inputs["x"]) + inputs["shift"]
    return {"y": y, "energy": jnp.float32(0.5) * jnp.sum(y**2)}


_ACT = {"tanh": jnp.tanh, "sin": jnp.sin, "identity": lambda v: v}


def nested_ref(inputs: dict) -> dict:
    keys = sorted(inputs["params"])
    h = sum((i + 1.0) * jnp.asarray(inputs["params"][k]) for i, k in enumerate(keys))
    for _ in range(inputs["config"]["repeat"]):
        for layer in inputs["layers"]:
            act = _ACT[layer["activation"]]
            h = act(jnp.asarray(layer["w"]) @ h + layer["b"]) * jnp.asarray(
                layer["scale"]
            )
    out = h + inputs["config"]["offset"]
    return {"out": out, "summary": {"sumsq": jnp.sum(out**2), "mean": jnp.mean(out)}}


def meshstats_ref(inputs: dict) -> dict:
    points = inputs["mesh"]["points"]
    return {
        "statistics": {
            "first_point_coordinates": points[0],
            "barycenter": points.mean(axis=0),
        }
    }


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------


@dataclass
class Case:
    """One Tesseract with its reference and how to drive it.

    Attributes:
        name: Case id.
        example: Example Tesseract name (``examples/<example>``).
        fd: Wrap the client in ``tess_ad.with_finite_differences``.
        args: Differentiable leaves (the argument of every transformation).
        build: ``args -> full inputs`` (static leaves closed over).
        ref: Pure-JAX reference of the differentiable outputs.
        scalar: Scalar loss of the outputs (for grad, hessian...).
        vector: 1-D readout of the differentiable outputs (jacobians...).
        rtol, atol: First-order tolerances.
        hess_rtol, hess_atol: Second-order tolerances.
        second_order: Whether the Tesseract's VJP is smooth enough for
            second derivatives (central differences of it) to mean anything.
    """

    name: str
    example: str
    fd: bool
    args: Any
    build: Callable[[Any], dict]
    ref: Callable[[dict], dict]
    scalar: Callable[[dict], Any]
    vector: Callable[[dict], Any]
    rtol: float
    atol: float
    hess_rtol: float
    hess_atol: float
    second_order: bool = True


def _rosenbrock_case(fd: bool) -> Case:
    raw = example_inputs("rosenbrock")
    return Case(
        name="rosenbrock_fd" if fd else "rosenbrock",
        example="rosenbrock",
        fd=fd,
        args=jnp.asarray(raw["x"], jnp.float64),
        build=lambda x: {"x": x, "a": raw["a"], "b": raw["b"]},
        ref=rosenbrock_ref,
        scalar=lambda o: o["loss"] + jnp.sum(jnp.sin(o["residuals"])),
        vector=lambda o: jnp.concatenate([o["loss"][None], o["residuals"]]),
        # Measured max abs errors (values up to ~800): analytic 6e-14 first
        # order, 9e-9 Hessian (central difference of the exact VJP); FD
        # (central, scale-aware steps) 3e-8 first order, 4e-3 Hessian (a
        # central difference of an FD VJP). Tolerances leave ~5-10x margin.
        rtol=1e-9 if fd else 1e-12,
        atol=2e-7 if fd else 1e-10,
        hess_rtol=1e-4 if fd else 1e-8,
        hess_atol=2e-2 if fd else 1e-7,
    )


def _float32_case() -> Case:
    raw = example_inputs("float32")
    shift = np.asarray(raw["shift"]["data"]["buffer"], np.float32)
    x = jnp.asarray(raw["x"]["data"]["buffer"], jnp.float32)
    return Case(
        name="float32",
        example="float32",
        fd=False,
        args={"x": x, "w": jnp.float32(raw["w"])},
        build=lambda a: {"x": a["x"], "w": a["w"], "shift": shift},
        ref=float32_ref,
        scalar=lambda o: o["energy"] + jnp.sum(jnp.cos(o["y"])),
        vector=lambda o: jnp.concatenate([o["energy"][None], o["y"]]),
        # float32 arithmetic on both sides (eps 1.2e-7; measured 2.4e-7 max
        # abs); the Hessian comes from central differences of the float32 VJP
        # (measured 1.3e-4 max abs on values up to 1.6).
        rtol=2e-6,
        atol=2e-6,
        hess_rtol=1e-3,
        hess_atol=1e-3,
    )


def _nested_case() -> Case:
    raw = example_inputs("nested")

    def build(a: dict) -> dict:
        inputs = copy.deepcopy(raw)
        inputs["params"] = dict(a["params"])
        for layer, w, b in zip(inputs["layers"], a["w"], a["b"], strict=True):
            layer["w"], layer["b"] = w, b
            layer["scale"] = np.asarray(layer["scale"])  # static array leaf
        return inputs

    args = {
        "params": {k: jnp.asarray(v, jnp.float64) for k, v in raw["params"].items()},
        "w": [jnp.asarray(layer["w"], jnp.float64) for layer in raw["layers"]],
        "b": [jnp.asarray(layer["b"], jnp.float64) for layer in raw["layers"]],
    }
    return Case(
        name="nested_fd",
        example="nested",
        fd=True,
        args=args,
        build=build,
        ref=nested_ref,
        scalar=lambda o: (
            o["summary"]["sumsq"] + jnp.sum(jnp.sin(o["out"])) + o["summary"]["mean"]
        ),
        vector=lambda o: jnp.concatenate(
            [o["out"], o["summary"]["sumsq"][None], o["summary"]["mean"][None]]
        ),
        # Values are O(1-6). Measured max abs errors: FD first derivatives
        # 4e-10, Hessians (central differences of FD VJPs) 5e-4.
        rtol=1e-8,
        atol=5e-9,
        hess_rtol=1e-3,
        hess_atol=2e-3,
    )


def _meshstats_case() -> Case:
    raw = example_inputs("meshstats_fd")

    def build(points: Any) -> dict:
        inputs = copy.deepcopy(raw)
        inputs["mesh"]["points"] = points
        return inputs

    return Case(
        name="meshstats_fd",
        example="meshstats_fd",
        fd=False,  # its own gradient endpoints are finite differences (server side)
        args=jnp.asarray(raw["mesh"]["points"], jnp.float64),
        build=build,
        ref=meshstats_ref,
        scalar=lambda o: (
            jnp.sum(jnp.sin(o["statistics"]["barycenter"]))
            + jnp.sum(o["statistics"]["first_point_coordinates"] ** 2)
        ),
        vector=lambda o: jnp.concatenate(
            [o["statistics"]["first_point_coordinates"], o["statistics"]["barycenter"]]
        ),
        # Its own endpoints are tesseract-core FD helpers with an absolute step
        # of 1e-6: measured errors up to 3e-8 at the probe points. Their VJP
        # also jumps by ~1e-6 between nearby points (e.g. d barycenter/d
        # points[0, 0] is 0.19999695 at points[0, 0] = 1e-5), so second
        # derivatives, which difference that VJP over a ~1e-5 step, are
        # meaningless for it: no Hessian test (see TRANSFORMS_FOR).
        rtol=1e-7,
        atol=2e-7,
        hess_rtol=float("nan"),
        hess_atol=float("nan"),
        second_order=False,
    )


CASES: dict[str, Callable[[], Case]] = {
    "rosenbrock": lambda: _rosenbrock_case(False),
    "rosenbrock_fd": lambda: _rosenbrock_case(True),
    "float32": _float32_case,
    "nested_fd": _nested_case,
    "meshstats_fd": _meshstats_case,
}


def make_case(name: str) -> Case:
    return CASES[name]()


def maybe_jit(fn: Callable, mode: str) -> Callable:
    """``fn`` itself (``"eager"``) or ``jax.jit(fn)`` (``"jit"``)."""
    return fn if mode == "eager" else jax.jit(fn)


# --------------------------------------------------------------------------
# Transformations: each maps (f, v, args, tangent, cotangent, batch) -> pytree
# --------------------------------------------------------------------------


def _vjp(f, v, a, t, ct, ab):
    y, pull = jax.vjp(v, a)
    return y, pull(ct)


def _linearize(f, v, a, t, ct, ab):
    y, lin = jax.linearize(v, a)
    return y, lin(t)


TRANSFORMS: dict[str, Callable[..., Any]] = {
    "grad": lambda f, v, a, t, ct, ab: jax.grad(f)(a),
    "value_and_grad": lambda f, v, a, t, ct, ab: jax.value_and_grad(f)(a),
    "vjp": _vjp,
    "jacrev": lambda f, v, a, t, ct, ab: jax.jacrev(v)(a),
    "jvp": lambda f, v, a, t, ct, ab: jax.jvp(v, (a,), (t,)),
    "jacfwd": lambda f, v, a, t, ct, ab: jax.jacfwd(v)(a),
    "linearize": _linearize,
    "hessian": lambda f, v, a, t, ct, ab: jax.hessian(f)(a),
    "vmap": lambda f, v, a, t, ct, ab: jax.vmap(v)(ab),
    "vmap_grad": lambda f, v, a, t, ct, ab: jax.vmap(jax.grad(f))(ab),
}


SECOND_ORDER = {"hessian"}


def transforms_for(case_name: str) -> list[str]:
    """The transformations a case is tested under."""
    case = make_case(case_name)
    return [t for t in TRANSFORMS if case.second_order or t not in SECOND_ORDER]


def probe_vectors(case: Case, seed: int = 0) -> tuple[Any, Any, Any]:
    """Fixed-seed tangent, cotangent and a batch of 3 argument points."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree.flatten(case.args)
    tangent = jax.tree.unflatten(
        treedef,
        [jnp.asarray(rng.standard_normal(np.shape(x)), x.dtype) for x in leaves],
    )
    n_out = case.vector(case.ref(case.build(case.args))).shape[0]
    dtype = case.vector(case.ref(case.build(case.args))).dtype
    cotangent = jnp.asarray(rng.standard_normal(n_out), dtype)
    batch = jax.tree.unflatten(
        treedef,
        [
            jnp.stack(
                [
                    x
                    + jnp.asarray(0.05 * k * rng.standard_normal(np.shape(x)), x.dtype)
                    for k in range(3)
                ]
            )
            for x in leaves
        ],
    )
    return tangent, cotangent, batch
