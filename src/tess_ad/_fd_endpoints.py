"""The three finite-difference endpoints, shared by both front ends.

:func:`tess_ad.with_finite_differences` (a client-side proxy: flat trees of a
Tesseract's inputs) and the drop-in helpers :func:`tess_ad.finite_difference_jacobian`
and friends (inside a ``tesseract_api.py``: pydantic models) differ only in
how they read the base values, build a perturbed input and read an output,
which is what a :class:`~tess_ad._evaluate.FlatFunction` packs. Everything
else is here, once: checking the cotangent or tangent, the steps, the plan,
its evaluation and the dtype of the result. New estimators are new plans in
``_fd`` (one step per direction) or ``_fd_two_step`` (two: Richardson, and
every estimate with an error estimate, ``with_error=True``), and reach both
front ends through these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._evaluate import BatchedPlan, FlatFunction, run_plan
from ._fd import EpsLike, jacobian_plan, jvp_plan, resolve_steps, vjp_plan
from ._sparsity import validate_sparsity

__all__ = ["FDSettings", "fd_jacobian", "fd_jvp", "fd_vjp"]

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class FDSettings:
    """How a finite-difference endpoint estimates and evaluates.

    Attributes:
        method: ``"central"``, ``"forward"``, ``"stochastic"`` or
            ``"richardson"`` (validated by the front end).
        eps: Steps as for :func:`~tess_ad._fd.resolve_steps`.
        num_samples: SPSA samples.
        seed: SPSA seed.
        sparsity: A Jacobian sparsity pattern (:mod:`tess_ad._sparsity`):
            Jacobians and VJPs perturb its colours, not each element.
        batch_size: Points per evaluation (:class:`~tess_ad._evaluate.BatchedPlan`;
            the function then takes and returns a leading batch axis).
        evaluation: Keyword arguments of :func:`~tess_ad._evaluate.run_plan`
            (``executor``, ``progress``, ``cache``) besides the description.
    """

    method: str = "central"
    eps: EpsLike = None
    num_samples: int | None = None
    seed: int | None = None
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    sparsity: Mapping[str, Mapping[str, Any]] | None = None
    batch_size: int | None = None

    def pattern(self, x: Arrays) -> dict[str, dict[str, np.ndarray]] | None:
        """The sparsity pattern for the inputs ``x``, checked (``None``: dense)."""
        if self.sparsity is None:
            return None
        return validate_sparsity(self.sparsity, {p: np.shape(v) for p, v in x.items()})

    def run(self, plan: Any, fn: FlatFunction, endpoint: str, x: Arrays) -> Any:
        """Evaluate ``plan`` (at base point ``x``) with these settings."""
        if self.batch_size is not None:
            plan = BatchedPlan(plan, x, self.batch_size)
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
    with_error: bool = False,
) -> Any:
    """Jacobian blocks ``{out: {in: array(*out_shape, *in_shape)}}``.

    Args:
        fn: The Tesseract's ``apply`` as a flat function.
        x: ``{in_path: array}`` at the base point, in each leaf's compute dtype.
        dtypes: The compute dtype of each input leaf.
        out_paths: Output paths to differentiate.
        settings: Method, steps and evaluation.
        out_dtype: Each output's dtype, asked once the sweep has run.
        with_error: Return ``(jacobian, error)``, the error estimate in the
            same layout (see ``_fd_two_step``).
    """
    plan = jacobian_plan(
        x,
        resolve_steps(x, settings.method, settings.eps, dtypes),
        list(out_paths),
        method=settings.method,
        num_samples=settings.num_samples,
        seed=settings.seed,
        sparsity=settings.pattern(x),
        with_error=with_error,
    )
    value, error = _split(settings.run(plan, fn, "jacobian", x), with_error)

    def cast(blocks: dict[str, Arrays]) -> dict[str, Arrays]:
        return {
            o: {
                p: blk.astype(np.result_type(out_dtype(o), dtypes[p]), copy=False)
                for p, blk in row.items()
            }
            for o, row in blocks.items()
        }

    return (cast(value), cast(error)) if with_error else cast(value)


def fd_vjp(
    fn: FlatFunction,
    x: Arrays,
    dtypes: Mapping[str, np.dtype],
    out_paths: Sequence[str],
    cotangent_vector: Mapping[str, Any],
    settings: FDSettings,
    with_error: bool = False,
) -> Any:
    """VJP ``{in: sum_out ct[out] . J[out, in]}``, in each input's dtype.

    With ``with_error``: ``(vjp, error)``, the error estimate in the same layout.
    """
    missing = [o for o in out_paths if o not in cotangent_vector]
    if missing:
        raise ValueError(f"cotangent_vector has no value for output(s) {missing}")
    ct = {o: np.asarray(cotangent_vector[o], dtype=np.float64) for o in out_paths}
    plan = vjp_plan(
        x,
        resolve_steps(x, settings.method, settings.eps, dtypes),
        ct,
        method=settings.method,
        num_samples=settings.num_samples,
        seed=settings.seed,
        sparsity=settings.pattern(x),
        with_error=with_error,
    )
    value, error = _split(
        settings.run(plan, fn, "vector_jacobian_product", x), with_error
    )

    def cast(result: Arrays) -> Arrays:
        return {p: v.astype(dtypes[p], copy=False) for p, v in result.items()}

    return (cast(value), cast(error)) if with_error else cast(value)


def fd_jvp(
    fn: FlatFunction,
    x: Arrays,
    dtypes: Mapping[str, np.dtype],
    out_paths: Sequence[str],
    tangent_vector: Mapping[str, Any],
    settings: FDSettings,
    out_dtype: Callable[[str], np.dtype],
    with_error: bool = False,
) -> Any:
    """JVP ``{out: sum_in J[out, in] . t[in]}`` by directional differences.

    With ``with_error``: ``(jvp, error)``, the error estimate in the same layout.
    """
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
        with_error=with_error,
    )
    value, error = _split(
        settings.run(plan, fn, "jacobian_vector_product", x), with_error
    )

    def cast(result: Arrays) -> Arrays:
        return {o: v.astype(out_dtype(o), copy=False) for o, v in result.items()}

    return (cast(value), cast(error)) if with_error else cast(value)


def _split(result: Any, with_error: bool) -> tuple[Any, Any]:
    """``(value, error)`` of a plan's result (``error`` is ``None`` without an estimate)."""
    return result if with_error else (result, None)
