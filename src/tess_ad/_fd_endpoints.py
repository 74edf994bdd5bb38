"""The three finite-difference endpoints, shared by both front ends.

:func:`tess_ad.with_finite_differences` (a client-side proxy: flat trees of a
Tesseract's inputs) and the drop-in helpers :func:`tess_ad.finite_difference_jacobian`
and friends (inside a ``tesseract_api.py``: pydantic models) differ only in
how they read the base values, build a perturbed input and read an output,
which is what a :class:`~tess_ad._evaluate.FlatFunction` packs. Everything
else is here, once: checking the cotangent or tangent, the steps, the plan,
its evaluation and the dtype of the result. New estimators are new plans in
``_fd``, and reach both front ends through these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._evaluate import FlatFunction, run_plan
from ._fd import EpsLike, jacobian_plan, jvp_plan, resolve_steps, vjp_plan

__all__ = ["FDSettings", "fd_jacobian", "fd_jvp", "fd_vjp"]

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class FDSettings:
    """How a finite-difference endpoint estimates and evaluates.

    Attributes:
        method: ``"central"``, ``"forward"`` or ``"stochastic"`` (validated
            by the front end).
        eps: Steps as for :func:`~tess_ad._fd.resolve_steps`.
        num_samples: SPSA samples.
        seed: SPSA seed.
        evaluation: Keyword arguments of :func:`~tess_ad._evaluate.run_plan`
            (``executor``, ``progress``, ``cache``) besides the description.
    """

    method: str = "central"
    eps: EpsLike = None
    num_samples: int | None = None
    seed: int | None = None
    evaluation: Mapping[str, Any] = field(default_factory=dict)

    def run(self, plan: Any, fn: FlatFunction, endpoint: str) -> Any:
        """Evaluate ``plan`` with these settings."""
        return run_plan(
            plan,
            fn,
            description=f"{endpoint} ({self.method} differences)",
            **self.evaluation,
        )


def fd_jacobian(
    fn: FlatFunction,
    x: Arrays,
    dtypes: Mapping[str, np.dtype],
    out_paths: Sequence[str],
    settings: FDSettings,
    out_dtype: Callable[[str], np.dtype],
) -> dict[str, Arrays]:
    """Jacobian blocks ``{out: {in: array(*out_shape, *in_shape)}}``.

    Args:
        fn: The Tesseract's ``apply`` as a flat function.
        x: ``{in_path: array}`` at the base point, in each leaf's compute dtype.
        dtypes: The compute dtype of each input leaf.
        out_paths: Output paths to differentiate.
        settings: Method, steps and evaluation.
        out_dtype: Each output's dtype, asked once the sweep has run.
    """
    steps = resolve_steps(x, settings.method, settings.eps, dtypes)
    plan = jacobian_plan(
        x,
        steps,
        list(out_paths),
        method=settings.method,
        num_samples=settings.num_samples,
        seed=settings.seed,
    )
    result = settings.run(plan, fn, "jacobian")
    return {
        o: {
            p: blk.astype(np.result_type(out_dtype(o), dtypes[p]), copy=False)
            for p, blk in row.items()
        }
        for o, row in result.items()
    }


def fd_vjp(
    fn: FlatFunction,
    x: Arrays,
    dtypes: Mapping[str, np.dtype],
    out_paths: Sequence[str],
    cotangent_vector: Mapping[str, Any],
    settings: FDSettings,
) -> Arrays:
    """VJP ``{in: sum_out ct[out] . J[out, in]}``, in each input's dtype."""
    missing = [o for o in out_paths if o not in cotangent_vector]
    if missing:
        raise ValueError(f"cotangent_vector has no value for output(s) {missing}")
    ct = {o: np.asarray(cotangent_vector[o], dtype=np.float64) for o in out_paths}
    steps = resolve_steps(x, settings.method, settings.eps, dtypes)
    plan = vjp_plan(
        x,
        steps,
        ct,
        method=settings.method,
        num_samples=settings.num_samples,
        seed=settings.seed,
    )
    result = settings.run(plan, fn, "vector_jacobian_product")
    return {p: v.astype(dtypes[p], copy=False) for p, v in result.items()}


def fd_jvp(
    fn: FlatFunction,
    x: Arrays,
    dtypes: Mapping[str, np.dtype],
    out_paths: Sequence[str],
    tangent_vector: Mapping[str, Any],
    settings: FDSettings,
    out_dtype: Callable[[str], np.dtype],
) -> Arrays:
    """JVP ``{out: sum_in J[out, in] . t[in]}`` by directional differences."""
    missing = [p for p in x if p not in tangent_vector]
    if missing:
        raise ValueError(f"tangent_vector has no value for input(s) {missing}")
    tangent = {}
    for p in x:
        t = np.asarray(tangent_vector[p], dtype=np.float64)
        if t.shape != x[p].shape:
            raise ValueError(
                f"tangent for input {p!r} has shape {t.shape}, expected {x[p].shape}"
            )
        tangent[p] = t
    plan = jvp_plan(
        x,
        tangent,
        list(out_paths),
        method=settings.method,
        eps=settings.eps,
        dtypes=dtypes,
    )
    result = settings.run(plan, fn, "jacobian_vector_product")
    return {o: v.astype(out_dtype(o), copy=False) for o, v in result.items()}
