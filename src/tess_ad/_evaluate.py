"""Evaluate the points of a finite-difference plan: serially, in parallel or on dask.

The estimators in ``_fd.py`` say *which* points to evaluate; this module says
*how*. A :class:`FlatFunction` knows how to turn a plan point (perturbed
values of some leaves) into a full input tree, call ``apply``, and pick the
differentiated output leaves out of the result. :func:`run_plan` then walks
the plan:

* ``executor=None``: one point after another.
* any ``concurrent.futures.Executor`` (a thread pool suits a Tesseract served
  with several workers), or a ``dask.distributed.Client`` (a cluster; what
  travels to the workers is the served Tesseract's URL or the path of its
  ``tesseract_api.py``, which each worker loads once, never a live client).
  At most ``2 * workers`` points are in flight, so memory stays bounded.
* outputs are folded into the plan strictly in plan order, whatever order they
  finish in: parallel results are bit-for-bit those of a serial run.
* ``batch_size=B``: :class:`BatchedPlan` makes every ``B`` consecutive points
  one evaluation, whose differentiated leaves carry a leading batch axis (for
  a Tesseract whose arrays all take one), and splits the outputs back, so
  the estimators never know.
* with a cache, every finished evaluation is written to disk as soon as it is
  collected; a failing evaluation stops the sweep with its own exception
  after the evaluations still running have finished and been stored, so a
  rerun makes only the missing calls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np

from ._cache import EvaluationCache
from ._client import client_for
from ._fd import Flat, Plan

__all__ = ["BatchedPlan", "FlatFunction", "remote_apply", "run_plan"]


class FlatFunction:
    """A Tesseract's ``apply`` seen as ``{perturbed leaf: array} -> {output leaf: array}``.

    Args:
        build_inputs: Full input tree for a plan point (``{path: value}`` of the
            perturbed leaves; all other leaves keep their base values).
        apply: Call ``apply`` on a full input tree (in this process).
        extract: Pick ``{out_path: array}`` out of ``apply``'s result.
        cache_key: Optional cache key of a plan point.
        remote: Optional ``(function, target)`` for dask: ``function(target,
            inputs)`` runs ``apply`` on a worker.
    """

    def __init__(
        self,
        build_inputs: Callable[[Flat], Any],
        apply: Callable[[Any], Any],
        extract: Callable[[Any], Flat],
        cache_key: Callable[[Flat], str] | None = None,
        remote: tuple[Callable, Any] | None = None,
    ) -> None:
        self.build_inputs = build_inputs
        self.apply = apply
        self.extract = extract
        self.cache_key = cache_key
        self.remote = remote

    def __call__(self, point: Flat) -> Flat:
        return self.extract(self.apply(self.build_inputs(point)))


class BatchedPlan:
    """A plan whose evaluations are ``batch_size`` points of another plan at a time.

    Evaluation ``c`` stacks points ``c * B .. c * B + B - 1``: every leaf of
    ``x`` (the differentiated inputs) gets a leading batch axis, with the base
    value where a point does not move it. Its outputs, which carry the batch
    axis too, are split and folded into the inner plan in order; a
    non-finite output is reported for the point it belongs to.
    """

    def __init__(
        self, plan: Plan, x: Mapping[str, np.ndarray], batch_size: int
    ) -> None:
        self.plan = plan
        self.x = {p: np.asarray(v) for p, v in x.items()}
        self.batch_size = batch_size
        self.size = -(-plan.size // batch_size)

    def _ks(self, c: int) -> range:
        return range(
            c * self.batch_size, min((c + 1) * self.batch_size, self.plan.size)
        )

    def point(self, c: int) -> Flat:
        points = [self.plan.point(k) for k in self._ks(c)]
        return {
            p: np.stack(
                [np.asarray(pt.get(p, base), dtype=base.dtype) for pt in points]
            )
            for p, base in self.x.items()
        }

    def describe(self, c: int) -> str:
        ks = self._ks(c)
        return (
            f"a batch of points {ks.start + 1}..{ks.stop} is evaluated (the first: "
            f"{self.plan.describe(ks.start)})"
        )

    def accumulate(self, c: int, outputs: Flat) -> None:
        ks = self._ks(c)
        for o, v in outputs.items():
            if np.ndim(v) == 0 or np.shape(v)[0] != len(ks):
                raise ValueError(
                    f"batch_size: the Tesseract was called once for {len(ks)} points "
                    f"and must return output {o!r} with a leading batch axis of "
                    f"{len(ks)}, but it has shape {np.shape(v)}; use batch_size=None "
                    "for this Tesseract"
                )
        for b, k in enumerate(ks):
            self.plan.accumulate(k, {o: np.asarray(v)[b] for o, v in outputs.items()})

    def result(self) -> Any:
        return self.plan.result()


def _is_dask_client(executor: Any) -> bool:
    return type(executor).__module__.startswith("distributed") and hasattr(
        executor, "submit"
    )


def _workers(executor: Any) -> int:
    if _is_dask_client(executor):
        try:
            return max(1, sum(executor.nthreads().values()))
        except Exception:
            return 2
    return max(1, int(getattr(executor, "_max_workers", 2) or 2))


def run_plan(
    plan: Plan | BatchedPlan,
    fn: FlatFunction,
    *,
    executor: Executor | Any | None = None,
    progress: bool = False,
    cache: EvaluationCache | None = None,
    description: str = "finite differences",
) -> Any:
    """Evaluate every point of ``plan`` and return its result.

    Args:
        plan: From one of the ``*_plan`` functions of ``_fd``.
        fn: The flat function to evaluate.
        executor: ``None`` (serial), a ``concurrent.futures.Executor`` or a
            ``dask.distributed.Client``.
        progress: Show a tqdm progress bar of evaluations.
        cache: Where finished evaluations are kept, or ``None``.
        description: Label of the progress bar.

    Returns:
        ``plan.result()``.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.size, desc=description, unit="eval")
    try:
        _walk(plan, fn, executor, cache, bar)
    finally:
        if bar is not None:
            bar.close()
    return plan.result()


def _walk(
    plan: Plan | BatchedPlan,
    fn: FlatFunction,
    executor: Any,
    cache: EvaluationCache | None,
    bar: Any,
) -> None:
    keys: dict[int, str] = {}

    def lookup(k: int, point: Flat) -> Flat | None:
        if cache is None or fn.cache_key is None:
            return None
        keys[k] = fn.cache_key(point)
        return cache.get(keys[k])

    def store(k: int, out: Flat) -> None:
        if cache is not None and k in keys:
            cache.put(keys[k], out)

    def done(k: int, out: Flat) -> None:
        plan.accumulate(k, out)
        if bar is not None:
            bar.update(1)

    if executor is None:
        for k in range(plan.size):
            point = plan.point(k)
            out = lookup(k, point)
            if out is None:
                try:
                    out = fn(point)
                except BaseException as exc:
                    _annotate(exc, plan, k)
                    raise
                store(k, out)
            done(k, out)
        return

    dask = _is_dask_client(executor)
    window = 2 * _workers(executor)
    in_flight: deque[tuple[int, Any]] = deque()  # (k, future or cached outputs)
    next_k = 0

    def submit(k: int) -> Any:
        point = plan.point(k)
        cached = lookup(k, point)
        if cached is not None:
            return ("cached", cached)
        if dask:
            if fn.remote is None:
                raise TypeError(
                    "this Tesseract cannot be sent to dask workers; use a served "
                    "Tesseract (Tesseract.from_url) or one loaded from a tesseract_api.py path"
                )
            func, target = fn.remote
            return (
                "dask",
                executor.submit(func, target, fn.build_inputs(point), pure=False),
            )
        return ("local", executor.submit(fn, point))

    try:
        while next_k < plan.size or in_flight:
            while next_k < plan.size and len(in_flight) < window:
                try:
                    handle = submit(next_k)
                except BaseException as exc:
                    _annotate(
                        exc, plan, next_k, "could not be submitted to the executor"
                    )
                    raise
                in_flight.append((next_k, handle))
                next_k += 1
            k, (kind, handle) = in_flight.popleft()
            if kind == "cached":
                done(k, handle)
                continue
            try:
                result = handle.result()
            except BaseException as exc:
                _annotate(exc, plan, k)
                raise
            out = fn.extract(result) if kind == "dask" else result
            store(k, out)
            done(k, out)
    except BaseException:
        _drain(in_flight, fn, store)
        raise


def _drain(
    in_flight: deque, fn: FlatFunction, store: Callable[[int, Flat], None]
) -> None:
    """After a failure: cancel what has not started, keep what finishes."""
    for _, (kind, handle) in in_flight:
        if kind != "cached":
            handle.cancel()
    for k, (kind, handle) in in_flight:
        if kind == "cached" or handle.cancelled():
            continue
        try:
            result = handle.result()
        except BaseException:
            continue
        store(k, fn.extract(result) if kind == "dask" else result)


def _annotate(
    exc: BaseException, plan: Plan | BatchedPlan, k: int, what: str = "raised this"
) -> None:
    note = (
        f"(tess_ad: finite-difference evaluation {k + 1} of {plan.size} {what}; "
        f"in it {plan.describe(k)})"
    )
    if hasattr(exc, "add_note"):
        exc.add_note(note)


# --------------------------------------------------------------------------
# dask: what travels to the workers
# --------------------------------------------------------------------------


def remote_apply(target: tuple[str, str], inputs: Mapping[str, Any]) -> dict:
    """Run ``apply`` on a dask worker; the client is made once per worker process."""
    return _plain(client_for(target).apply(inputs=dict(inputs)))


def _plain(tree: Any) -> Any:
    """Results as plain dicts, lists and NumPy arrays (cheap to send back)."""
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_plain(v) for v in tree]
    if isinstance(tree, np.generic):
        return np.asarray(tree)
    return tree
