"""How a ``vmap`` batch reaches a Tesseract: the decisions both adapters share.

``jax.vmap`` and ``torch.func.vmap`` over ``apply_tesseract`` either make ONE
Tesseract call for the whole batch (the array inputs carry a leading batch
axis, which the Tesseract handles itself) or one call per element. Which one,
and what each input looks like in the single call, is tesseract-jax's
``vmap_method`` contract; it depends only on the schema and on which inputs
carry the batch, so it is decided here once, in NumPy terms, and
``tess_ad.jax`` and ``tess_ad.torch`` both follow the same :func:`plan`:

* ``None``/``"sequential"``: one call per element.
* ``"expand_dims"``: one call; unbatched array inputs get a leading axis of 1.
* ``"broadcast_all"``: one call; unbatched array inputs are broadcast to the
  batch size.
* ``"auto_experimental"``: as ``"expand_dims"`` when every batched input is
  ``Differentiable`` with a free rank (``Array[..., dtype]``), else one call
  per element.
* ``"auto"`` (tess_ad's own): one call when every batched input,
  differentiable or not, has a free rank; unbatched inputs then get a
  leading 1 only where the rank is free.

A call per element can run several at once (``vmap_workers``):
:func:`per_element` keeps the results in element order, so a concurrent run
is bit-identical to a serial one. :class:`LoopedEndpoints` is an
:class:`~tess_ad._endpoints.Endpoints` over a whole batch that does exactly
that, so an adapter can treat a loop over the batch as one call whose
derivatives (per element, summed for an input shared by every element) still
come from ``Endpoints``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from ._endpoints import Endpoints
from ._errors import SchemaError
from ._schema import FlatTree

__all__ = [
    "VECTORIZING",
    "VMAP_METHODS",
    "LoopedEndpoints",
    "check_options",
    "fixed_rank_error",
    "missing_batch_axis_error",
    "per_element",
    "plan",
]

VMAP_METHODS = (
    None,
    "sequential",
    "auto",
    "auto_experimental",
    "expand_dims",
    "broadcast_all",
)
VECTORIZING = ("expand_dims", "broadcast_all", "auto_experimental", "auto")

T = TypeVar("T")


def check_options(vmap_method: Any, vmap_workers: Any, function: str) -> None:
    """Refuse an unknown ``vmap_method`` or a ``vmap_workers`` that is not a count.

    Raises:
        ValueError: Naming the argument, what it got and what it takes.
    """
    if vmap_method not in VMAP_METHODS:
        raise ValueError(
            f"unknown vmap_method {vmap_method!r}; expected one of {VMAP_METHODS} "
            f"(see the docstring of {function})"
        )
    if vmap_workers is not None and (
        not isinstance(vmap_workers, int)
        or isinstance(vmap_workers, bool)
        or vmap_workers < 1
    ):
        raise ValueError(
            f"vmap_workers must be a positive int (calls at once) or None, got "
            f"{vmap_workers!r}"
        )


def plan(
    method: str | None,
    carries: Sequence[bool],
    scalar: Sequence[bool],
    rank_free: Sequence[bool],
    differentiable: Sequence[bool],
) -> list[str] | None:
    """How each input enters one call for the whole batch, or ``None``: loop.

    Args:
        method: The ``vmap_method``.
        carries: Per input, whether it carries the batch axis in the call
            (it is batched, or broadcast because its tangent is batched or
            its per-element VJP is asked for).
        scalar: Per input, whether it is a Python number (no axis fits).
        rank_free: Per input, whether the schema takes any number of
            dimensions for it.
        differentiable: Per input, whether the schema marks it ``Differentiable``.

    Returns:
        Per input: ``"batch"`` (it carries the batch axis, broadcast to it if
        it is not batched yet), ``"expand"`` (a leading axis of 1),
        ``"broadcast"`` (to the batch size) or ``"keep"`` (unchanged).
    """
    if method not in VECTORIZING:
        return None
    steps = []
    for carry, is_scalar, free, diff in zip(
        carries, scalar, rank_free, differentiable, strict=True
    ):
        if carry:
            if is_scalar:
                return None  # a Python number cannot carry a batch axis
            if method == "auto" and not free:
                return None
            if method == "auto_experimental" and not (free and diff):
                return None
            steps.append("batch")
        elif is_scalar or (method == "auto" and not free):
            steps.append("keep")
        elif method == "broadcast_all":
            steps.append("broadcast")
        else:
            steps.append("expand")
    return steps


def fixed_rank_error(method: str, path: str, fixed_rank: str) -> SchemaError:
    """The error for a vectorising method on an input whose schema fixes its rank."""
    return SchemaError(
        f"vmap_method={method!r} makes one Tesseract call for the whole batch, "
        f"giving input {path!r} a leading batch axis, but its schema fixes its "
        f"number of dimensions ({fixed_rank}), so the Tesseract would refuse it. "
        "Use vmap_method='sequential' (one call per element) or 'auto' (one call "
        "when the schema allows it) for this Tesseract."
    )


def missing_batch_axis_error(method: str, size: int, found: str) -> RuntimeError:
    """The error for a vectorised call whose Tesseract left out the batch axis.

    ``found`` says what came back (e.g. ``"output 'y' has shape (3,)"``).
    """
    return RuntimeError(
        f"with vmap_method={method!r} the Tesseract was called once for a batch "
        f"of {size} and must return every array output with a leading batch axis "
        f"of length {size}: {found}. Use vmap_method='sequential' (one call per "
        "element) for this Tesseract."
    )


def per_element(fn: Callable[[int], T], size: int, workers: int | None) -> list[T]:
    """``[fn(0), ..., fn(size - 1)]``, ``workers`` at a time (threads).

    Results come back in element order, so a concurrent run gives the same
    (bit-identical) arrays as a serial one; the first exception is raised.
    """
    workers = min(workers or 1, size)
    if workers <= 1:
        return [fn(b) for b in range(size)]
    with ThreadPoolExecutor(workers, thread_name_prefix="tess_ad-vmap") as pool:
        return list(pool.map(fn, range(size)))


class LoopedEndpoints:
    """:class:`~tess_ad._endpoints.Endpoints` over a batch of points, one call per element.

    Input leaves at the ``batched`` paths carry a leading batch axis of
    ``size``; the others are shared by every element. Every method slices the
    batch, calls the same method of the wrapped ``Endpoints`` per element
    (``workers`` at once, see :func:`per_element`) and stacks the results:
    outputs, tangents and gradients of batched inputs along a new leading
    axis (after the rows, for the ``*_many`` methods), gradients of a shared
    input summed over the elements in order. Cotangents belong to the
    batched outputs, so they always carry the batch axis.

    Attributes:
        base: The ``Endpoints`` called per element.
        size: The batch size.
        batched: The input paths that carry the batch axis.
        workers: Calls at once (``None`` or 1: one after the other).
    """

    def __init__(
        self, base: Endpoints, size: int, batched: Collection[str], workers: int | None
    ) -> None:
        self.base = base
        self.size = size
        self.batched = frozenset(batched)
        self.workers = workers

    def __getattr__(self, name: str) -> Any:  # schema, has_*, accuracy, output_dtype
        return getattr(self.base, name)

    # -- slicing and stacking --------------------------------------------------------

    def _point(self, inputs: FlatTree | Mapping[str, Any], b: int) -> FlatTree:
        flat = self.base.flat_inputs(inputs)
        updates = {}
        for p in self.batched:
            leaf = flat[p]
            value = np.asarray(leaf.value)
            value = (
                value[b] if value.ndim else value
            )  # a batch of one number: the number
            updates[p] = value if leaf.is_array else value.item()
        return flat.replace(updates)

    def _run(self, fn: Callable[[int], T]) -> list[T]:
        return per_element(fn, self.size, self.workers)

    def _gradients(
        self, rows: Sequence[Mapping[str, np.ndarray]], paths: Sequence[str], axis: int
    ) -> dict[str, np.ndarray]:
        out = {}
        for p in paths:
            column = [np.asarray(r[p]) for r in rows]
            if p in self.batched:
                out[p] = np.stack(column, axis=axis)
            else:  # shared by every element: its gradient is the sum, in order
                total = column[0].copy()
                for term in column[1:]:
                    total += term
                out[p] = total
        return out

    @staticmethod
    def _one(
        shapes: Mapping[str, tuple[int, ...]] | None,
    ) -> dict[str, tuple[int, ...]] | None:
        """One element's output shapes (the batch axis dropped)."""
        return None if shapes is None else {o: tuple(s[1:]) for o, s in shapes.items()}

    # -- the endpoints -----------------------------------------------------------------

    def apply(self, inputs: FlatTree | Mapping[str, Any]) -> FlatTree:
        """``apply`` per element; array outputs stacked, other outputs as :func:`stack_values`."""
        outs = self._run(lambda b: self.base.apply(self._point(inputs, b)))
        first = outs[0]
        updates = {}
        for path, leaf in first.items():
            values = [o[path].value for o in outs]
            if leaf.is_array:
                shapes = {np.shape(v) for v in values}
                if len(shapes) > 1:
                    raise ValueError(
                        f"vmap: the Tesseract's output {path!r} has different shapes "
                        f"across the batch ({sorted(shapes)}), so it cannot be stacked "
                        "along a batch axis. Call the Tesseract in a Python loop instead."
                    )
                updates[path] = np.stack([np.asarray(v) for v in values])
            else:
                updates[path] = stack_values(values)
        return first.replace(updates)

    def vjp(
        self,
        inputs: FlatTree | Mapping[str, Any],
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
        *,
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-element VJPs (cotangents carry the batch axis)."""
        shapes = self._one(output_shapes)
        rows = self._run(
            lambda b: self.base.vjp(
                self._point(inputs, b),
                vjp_inputs,
                vjp_outputs,
                {o: np.asarray(c)[b] for o, c in cotangent_vector.items()},
                output_shapes=shapes,
            )
        )
        return self._gradients(rows, vjp_inputs, 0)

    def vjp_many(
        self,
        inputs: FlatTree | Mapping[str, Any],
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangents: Mapping[str, Any],
        *,
        use_jacobian: bool | None = None,
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Rows of per-element VJPs (cotangents ``(rows, batch, ...)``)."""
        shapes = self._one(output_shapes)
        rows = self._run(
            lambda b: self.base.vjp_many(
                self._point(inputs, b),
                vjp_inputs,
                vjp_outputs,
                {o: np.asarray(c)[:, b] for o, c in cotangents.items()},
                use_jacobian=use_jacobian,
                output_shapes=shapes,
            )
        )
        return self._gradients(rows, vjp_inputs, 1)

    def jvp(
        self,
        inputs: FlatTree | Mapping[str, Any],
        jvp_inputs: Sequence[str],
        jvp_outputs: Sequence[str],
        tangent_vector: Mapping[str, Any],
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-element JVPs (a tangent carries the batch axis where its input does)."""
        shapes = self._one(output_shapes)
        cols = self._run(
            lambda b: self.base.jvp(
                self._point(inputs, b),
                jvp_inputs,
                jvp_outputs,
                {
                    p: np.asarray(t)[b] if p in self.batched else t
                    for p, t in tangent_vector.items()
                },
                shapes,
            )
        )
        return {o: np.stack([c[o] for c in cols]) for o in jvp_outputs}

    def jvp_many(
        self,
        inputs: FlatTree | Mapping[str, Any],
        jvp_inputs: Sequence[str],
        jvp_outputs: Sequence[str],
        tangents: Mapping[str, Any],
        output_shapes: Mapping[str, tuple[int, ...]],
        *,
        use_jacobian: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """Rows of per-element JVPs (tangents ``(rows, batch, ...)`` where batched)."""
        shapes = self._one(output_shapes)
        assert shapes is not None
        cols = self._run(
            lambda b: self.base.jvp_many(
                self._point(inputs, b),
                jvp_inputs,
                jvp_outputs,
                {
                    p: np.asarray(t)[:, b] if p in self.batched else t
                    for p, t in tangents.items()
                },
                shapes,
                use_jacobian=use_jacobian,
            )
        )
        return {o: np.stack([c[o] for c in cols], axis=1) for o in jvp_outputs}

    def vjp_jvp(
        self,
        inputs: FlatTree | Mapping[str, Any],
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
        tangent_vector: Mapping[str, Any],
        *,
        output_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-element second-order products."""
        shapes = self._one(output_shapes)
        rows = self._run(
            lambda b: self.base.vjp_jvp(
                self._point(inputs, b),
                vjp_inputs,
                vjp_outputs,
                {o: np.asarray(c)[b] for o, c in cotangent_vector.items()},
                {
                    p: np.asarray(t)[b] if p in self.batched else t
                    for p, t in tangent_vector.items()
                },
                output_shapes=shapes,
            )
        )
        return self._gradients(rows, vjp_inputs, 0)


def stack_values(values: list[Any]) -> Any:
    """One non-array output over the elements of a batch.

    Numbers and arrays become one NumPy array with a leading batch axis;
    other values (strings, ...) are kept once if all elements agree, else
    listed.
    """
    if all(isinstance(v, np.ndarray | np.generic | bool | int | float) for v in values):
        try:
            return np.stack([np.asarray(v) for v in values])
        except ValueError:
            return values
    if all(v == values[0] for v in values[1:]):
        return values[0]
    return values
