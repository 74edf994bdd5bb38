"""One ``apply_tesseract`` call, split into JAX operands and static parts.

:func:`prepare_call` flattens the inputs with the Tesseract's schema (the
core's schema-leaf pytree) and decides, leaf by leaf, what JAX sees:

* array leaves at ``Differentiable`` paths are *operands* (cast to the
  schema's dtype, so ``jax.grad`` sees the dtype the Tesseract computes in);
* any other leaf that is a JAX tracer (a non-differentiable array or a
  Python scalar that ``jit`` turned into a tracer) is an operand too, since
  its value is only known at run time; a non-zero tangent on it is an error;
* everything else (config, strings, non-differentiable NumPy arrays) is
  static and travels inside :class:`TesseractCall`.

:class:`TesseractCall` is the static parameter of every primitive in
``_primitives``. It holds no tracer and no input data of the operands (a
placeholder skeleton rebuilds the nested inputs from the operand values), and
it compares by identity, so the jaxprs that hold it never keep a trace alive.

The ``host_*`` methods are what runs on the host, from the host callback of
a jitted program or from the eager implementation. They use NumPy only (never ``jax.numpy``: a
callback that calls back into JAX can deadlock) and get every number from
:class:`tess_ad._endpoints.Endpoints`, which the PyTorch adapter also uses.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from tess_ad._endpoints import Endpoints, NoGradientRouteError
from tess_ad._schema import FlatTree, Leaf, SchemaError, as_numpy
from tess_ad._values import placeholder
from tess_ad._vmap import missing_batch_axis_error, per_element

from ._compat import Tracer, canonical_dtype, hold_weakly_in_jax_caches, under_jit
from ._spec import (
    InputKey,
    OutputShapeError,
    OutputSpec,
    fixed_schema_spec,
    lookup_record,
    spec_from_abstract,
    spec_from_flat,
    store_record,
)

__all__ = [
    "Operand",
    "Prepared",
    "TesseractCall",
    "is_concrete",
    "prepare_call",
    "to_jax",
]


def is_concrete(value: Any) -> bool:
    """Whether a leaf value is known now (not a JAX tracer)."""
    return not isinstance(value, Tracer)


@dataclass(frozen=True)
class Operand:
    """An input leaf that is passed to the primitives as a JAX value.

    Attributes:
        path: The leaf's path.
        differentiable: Whether the schema marks it ``Differentiable``.
        shape: Shape of the JAX value.
        dtype: Dtype of the JAX value.
        scalar_type: ``float``/``int``/``bool`` for a Python-scalar schema
            field (turned back into that type on the host), else ``None``.
        rank_free: Whether the schema accepts any number of dimensions for
            this array (``Array[..., dtype]``), so the Tesseract can be
            handed a batch axis on it.
        fixed_rank: The schema's type of this array when it fixes the number
            of dimensions (``Array[(None,), float64]``): no batch axis fits.
    """

    path: str
    differentiable: bool
    shape: tuple[int, ...]
    dtype: np.dtype
    scalar_type: type | None
    rank_free: bool = False
    fixed_rank: str | None = None


_NOT_DIFFERENTIABLE = (
    "A non-zero derivative (a non-symbolic-zero tangent in forward mode, a "
    "cotangent in reverse mode) reached the input {path!r}, which the Tesseract's "
    "schema does not mark "
    "Differentiable, so it has no derivative. Either mark it `Differentiable[...]` "
    "in the Tesseract's schema (and give it a gradient route), or keep it out of "
    "differentiation: close over it (differentiate a function of the "
    "differentiable leaves only, or use `argnums`), or apply "
    "`jax.lax.stop_gradient` to it before calling apply_tesseract."
)

_NOT_DIFFERENTIABLE_OUTPUT = (
    "A non-symbolic-zero cotangent (the differentiated value uses it; explicit "
    "zeros count too) reached the output {path!r}, which the Tesseract's schema "
    "does not mark Differentiable, so its derivative is unknown (taking it as zero "
    "would give a silently wrong gradient). If this output should be "
    "differentiable, mark it `Differentiable[...]` in the Tesseract's OutputSchema "
    "(and give it a gradient route). Otherwise keep it out of the differentiated "
    "value: leave it out of what the function returns (pop it, or return it as "
    "aux with `has_aux=True`), or wrap it in `jax.lax.stop_gradient` where the "
    "loss uses it."
)


class TesseractCall:
    """The static part of one ``apply_tesseract`` call (hashed by identity).

    Attributes:
        endpoints: The derivative routes of the Tesseract.
        operands: The operand leaves, in the order the primitives take them.
        key: Shapes, dtypes and static values of the inputs, to find recorded
            output specs.
        materialize_jacobian: ``None`` (use the ``jacobian`` endpoint for
            ``jacfwd``/``jacrev`` when there is one), ``True`` or ``False``.
        vmap_method: How ``jax.vmap`` over the inputs is computed (see
            :func:`tess_ad.jax.apply_tesseract`).
        vmap_workers: Calls made at once when ``vmap`` runs one call per
            element (``None`` or 1: one after the other).
        batch_of: For a call made by ``vmap``: the call it batches, the batch
            size and how (``"vectorized"``: the Tesseract gets the batch axis;
            ``"loop"``: one call of the batched call per element).
        loop_mask: For a ``"loop"`` call: which operands carry the batch axis.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        skeleton: FlatTree,
        operands: tuple[Operand, ...],
        key: InputKey,
        abstract: Mapping[str, Any],
        materialize_jacobian: bool | None,
        vmap_method: str | None = None,
        vmap_workers: int | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.operands = operands
        self.key = key
        self.materialize_jacobian = materialize_jacobian
        self.vmap_method = vmap_method
        self.vmap_workers = vmap_workers
        # Set on the calls made by ``jax.vmap`` (see ``vectorized``/``looped``):
        # (the call they batch, the batch size, "vectorized" or "loop").
        self.batch_of: tuple[TesseractCall, int, str] | None = None
        self.loop_mask: tuple[bool, ...] | None = None
        self.index = {op.path: i for i, op in enumerate(operands)}
        self._skeleton = skeleton
        self._abstract = abstract
        self._spec: OutputSpec | None = None
        self._lock = threading.Lock()
        self.last_others: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"TesseractCall({len(self.operands)} operands)"

    @property
    def n(self) -> int:
        """Number of operands."""
        return len(self.operands)

    @property
    def tesseract(self) -> Any:
        """The Tesseract client."""
        return self.endpoints.tesseract

    # -- output spec ---------------------------------------------------------

    def spec(self) -> OutputSpec:
        """The output spec, found from the sources in ``_spec``'s order.

        Raises:
            OutputShapeError: If no source knows the output shapes.
        """
        if self._spec is not None:
            return self._spec
        with self._lock:
            if self._spec is None:
                self._spec = self._resolve_spec()
        return self._spec

    def _resolve_spec(self) -> OutputSpec:
        if self.batch_of is not None:
            parent, size, how = self.batch_of
            element = parent.spec()
            return element.with_batch(
                size, f"{element.source}, batched by vmap ({how})"
            )
        ep = self.endpoints
        problems = []
        failure: Exception | None = None
        if ep.schema.has("abstract_eval"):
            try:
                abstract_inputs = self._skeleton.unflatten(self._abstract)
                result = self.tesseract.abstract_eval(abstract_inputs=abstract_inputs)
                return spec_from_abstract(ep.schema, result)
            except Exception as exc:  # fall back to the next source, but say why
                failure = exc
                problems.append(f"its abstract_eval endpoint failed: {exc}")
        else:
            problems.append("it has no abstract_eval endpoint")
        spec = fixed_schema_spec(ep.schema)
        if spec is not None:
            return spec
        problems.append("its OutputSchema does not fix every output's shape")
        spec = lookup_record(self.tesseract, self.key)
        if spec is not None:
            return spec
        problems.append(
            "no earlier eager call with inputs of these shapes, dtypes and static values was made"
        )
        if failure is not None:
            # The Tesseract's own error (e.g. its validation refusing these inputs)
            # says more than "shapes unknown": it goes up unchanged, with a note.
            failure.add_note(
                "(tess_ad: apply_tesseract asked the abstract_eval endpoint for the "
                "output shapes under a JAX transformation, and it raised this; neither "
                "the OutputSchema nor an earlier eager call gives the shapes instead)"
            )
            raise failure
        shapes = ", ".join(
            f"{entry[1]}: {entry[3]}{list(cast('tuple[int, ...]', entry[2]))}"
            for entry in self.key
            if entry[0] == "a"
        )
        raise OutputShapeError(
            "apply_tesseract cannot tell the output shapes of this Tesseract under a "
            f"JAX transformation (jit, vmap, linearize...) for inputs {{{shapes}}}: "
            + "; ".join(problems)
            + ". Fix it in one of these ways: add an `abstract_eval` endpoint to the "
            "Tesseract's tesseract_api.py; give every output a fixed shape in its "
            "OutputSchema (e.g. Array[(3,), Float64]); or call "
            "`tess_ad.jax.apply_tesseract(tesseract, inputs)` once eagerly (outside "
            "jit) with inputs of the same shapes, which records the output shapes."
        )

    def _learn_spec(self, spec: OutputSpec) -> OutputSpec:
        """Adopt (or check against) the spec of a concrete call, and record it."""
        if self.batch_of is not None:
            size = self.batch_of[1]
            if any(
                leaf.kind != "other" and leaf.shape[:1] != (size,)
                for leaf in spec.leaves
            ):
                raise self._batch_axis_error(spec)
        store_record(self.tesseract, self.key, spec)
        # An eager vectorised call: its outputs say what one element returns,
        # so the calls it batches (nested vmaps) need no abstract_eval.
        call, learned = self, spec
        while call.batch_of is not None:
            parent, size, _ = call.batch_of
            if not all(
                leaf.kind == "other" or leaf.shape[:1] == (size,)
                for leaf in learned.leaves
            ):
                break
            learned = learned.without_batch("a vectorised concrete call")
            with parent._lock:
                if parent._spec is not None:
                    break
                parent._spec = learned
            call = parent
        with self._lock:
            if self._spec is None:
                self._spec = spec
        if not self._spec.same_as(spec):
            if self.batch_of is not None:
                raise self._batch_axis_error(spec)
            raise RuntimeError(
                "the Tesseract's apply returned outputs "
                f"{spec.describe()}, but {self._spec.source} announced "
                f"{self._spec.describe()}; fix the Tesseract's abstract_eval/OutputSchema "
                "so that both agree"
            )
        return self._spec

    def _batch_axis_error(self, returned: OutputSpec) -> RuntimeError:
        assert self.batch_of is not None
        size = self.batch_of[1]
        expected = f"expected {self._spec.describe()}, " if self._spec else ""
        return missing_batch_axis_error(
            str(self.vmap_method), size, f"{expected}it returned {returned.describe()}"
        )

    # -- tangent checks --------------------------------------------------------

    def check_differentiable(self, paths: Sequence[str]) -> None:
        """Raise naming the first operand path that is not differentiable."""
        for path in paths:
            if not self.operands[self.index[path]].differentiable:
                raise ValueError(_NOT_DIFFERENTIABLE.format(path=path))

    def check_output_cotangents(self, paths: Sequence[str]) -> None:
        """Raise naming the first output path (with a cotangent) that is not differentiable."""
        spec = self.spec()
        for path in paths:
            if not spec.leaf(path).differentiable:
                raise ValueError(_NOT_DIFFERENTIABLE_OUTPUT.format(path=path))

    def any_differentiable(self, outs: Sequence[str]) -> bool:
        """Whether any of the outputs ``outs`` is marked ``Differentiable``."""
        spec = self.spec()
        return any(spec.leaf(o).differentiable for o in outs)

    def require_route(self, mode: str) -> None:
        """Raise :class:`NoGradientRouteError` if ``mode`` derivatives are unavailable.

        Args:
            mode: ``"forward"`` (JVPs), ``"reverse"`` (VJPs) or ``"any"``.
        """
        ep = self.endpoints
        ok = {
            "forward": ep.has_forward,
            "reverse": ep.has_reverse,
            "any": ep.has_forward or ep.has_reverse,
        }[mode]
        if ok:
            return
        needs = {
            "forward": "forward-mode (jacobian_vector_product or jacobian)",
            "reverse": "reverse-mode (vector_jacobian_product or jacobian)",
            "any": "gradient (vector_jacobian_product, jacobian_vector_product or jacobian)",
        }[mode]
        raise NoGradientRouteError(
            f"cannot differentiate this Tesseract with JAX: it has no {needs} "
            "endpoint. Wrap it so that its derivatives come from finite differences "
            "of apply: `tesseract = tess_ad.with_finite_differences(tesseract)` (and "
            "pass that to apply_tesseract), or add the gradient endpoints to its "
            "tesseract_api.py."
        )

    def batch_route(self, mode: str) -> str:
        """The route a batch of ``mode`` products at one point needs."""
        return "any" if self.materialize_jacobian else mode

    # -- calls made by vmap -------------------------------------------------------

    def vectorized(self, size: int, shapes: Sequence[tuple[int, ...]]) -> TesseractCall:
        """This call on operands of new ``shapes``: the Tesseract handles the batch.

        One Tesseract call for a whole ``vmap`` batch; every JAX-valued output
        gets a leading axis of length ``size`` (the Tesseract must return it).
        """
        operands = tuple(
            replace(op, shape=tuple(shape))
            for op, shape in zip(self.operands, shapes, strict=True)
        )
        new_shape = {op.path: op.shape for op in operands}
        fill = {
            op.path: placeholder(op.shape, op.dtype)
            for op in operands
            if op.scalar_type is None
        }
        abstract = dict(self._abstract)
        for path, entry in abstract.items():
            if path in new_shape and isinstance(entry, dict):
                abstract[path] = {**entry, "shape": list(new_shape[path])}
        key = tuple(
            ("a", e[1], new_shape[e[1]], e[3])
            if e[0] == "a" and e[1] in new_shape
            else e
            for e in self.key
        )
        call = self._derived(operands, self._skeleton.replace(fill), key, abstract)
        call.batch_of = (self, size, "vectorized")
        return call

    def looped(self, size: int, mask: Sequence[bool]) -> TesseractCall:
        """This call mapped over a batch, one call per element (``vmap_workers`` at once).

        The operands flagged in ``mask`` carry a leading batch axis; the
        others are shared by every element. Its host functions slice the
        batch, call this call's host functions per element, and stack (or,
        for a shared operand's VJP, sum) the results: a function like any
        other, so every derivative rule applies to it unchanged.
        """
        operands = tuple(
            replace(op, shape=(size, *op.shape)) if batched else op
            for op, batched in zip(self.operands, mask, strict=True)
        )
        call = self._derived(operands, self._skeleton, self.key, self._abstract)
        call.batch_of = (self, size, "loop")
        call.loop_mask = tuple(mask)
        return call

    def _derived(
        self,
        operands: tuple[Operand, ...],
        skeleton: FlatTree,
        key: InputKey,
        abstract: Mapping[str, Any],
    ) -> TesseractCall:
        return TesseractCall(
            self.endpoints,
            skeleton,
            operands,
            key,
            abstract,
            self.materialize_jacobian,
            vmap_method=self.vmap_method,
            vmap_workers=self.vmap_workers,
        )

    def _per_element(self, fn: Callable[[int], Any]) -> list[Any]:
        """``fn(b)`` for each element of a loop call (:func:`tess_ad._vmap.per_element`)."""
        assert self.batch_of is not None
        return per_element(fn, self.batch_of[1], self.vmap_workers)

    def _slice(
        self, values: Sequence[Any], batched: Sequence[bool], b: int, rows: int
    ) -> list[Any]:
        """Element ``b`` of each value that carries the batch axis (after ``rows``)."""
        return [
            (np.asarray(v)[:, b] if rows else np.asarray(v)[b]) if m else v
            for v, m in zip(values, batched, strict=True)
        ]

    def _loop_apply(self, args: Sequence[Any]) -> tuple[np.ndarray, ...]:
        assert self.batch_of is not None and self.loop_mask is not None
        parent = self.batch_of[0]
        mask = self.loop_mask
        results = self._per_element(
            lambda b: parent.host_apply(*self._slice(args, mask, b, 0))
        )
        self.last_others = parent.last_others
        return tuple(np.stack(column) for column in zip(*results, strict=True))

    def _loop_jvp(
        self,
        wrt: tuple[str, ...],
        outs: tuple[str, ...],
        batch: int,
        args: Sequence[Any],
    ) -> tuple[np.ndarray, ...]:
        assert self.batch_of is not None and self.loop_mask is not None
        parent, mask = self.batch_of[0], self.loop_mask
        primals, tangents = args[: self.n], args[self.n :]
        t_mask = [mask[self.index[p]] for p in wrt]

        def element(b: int) -> tuple[np.ndarray, ...]:
            return parent.host_jvp(
                wrt,
                outs,
                batch,
                *self._slice(primals, mask, b, 0),
                *self._slice(tangents, t_mask, b, batch),
            )

        results = self._per_element(element)
        axis = 1 if batch else 0
        return tuple(np.stack(c, axis=axis) for c in zip(*results, strict=True))

    def _loop_reverse(
        self,
        wrt: tuple[str, ...],
        args: Sequence[Any],
        n_vectors: int,
        batch: int,
        host: Callable[..., tuple[np.ndarray, ...]],
        rest_mask: Sequence[bool] = (),
    ) -> tuple[np.ndarray, ...]:
        """A VJP-like product per element: stacked for batched inputs, summed for shared ones.

        ``args`` are the operands, ``n_vectors`` cotangents (always batched:
        they belong to the loop's outputs, after ``batch`` rows) and the rest
        (tangents on the operands, batched where ``rest_mask`` says).
        """
        assert self.loop_mask is not None
        mask = self.loop_mask
        primals = args[: self.n]
        vectors = args[self.n : self.n + n_vectors]
        rest = args[self.n + n_vectors :]
        vector_masks = [True] * n_vectors

        def element(b: int) -> tuple[np.ndarray, ...]:
            return host(
                *self._slice(primals, mask, b, 0),
                *self._slice(vectors, vector_masks, b, batch),
                *self._slice(rest, rest_mask, b, 0),
            )

        results = self._per_element(element)
        axis = 1 if batch else 0
        out = []
        for p, column in zip(wrt, zip(*results, strict=True), strict=True):
            if mask[self.index[p]]:
                out.append(np.stack(column, axis=axis))
            else:  # shared by every element: its gradient is the sum, in order
                total = column[0].copy()
                for term in column[1:]:
                    total += term
                out.append(total)
        return tuple(out)

    # -- host side (NumPy only) ----------------------------------------------------

    def inputs(self, values: Sequence[Any]) -> FlatTree:
        """The flat inputs with the operand values put in (NumPy/Python), no walk."""
        updates = {}
        for op, value in zip(self.operands, values, strict=True):
            arr = np.asarray(value)
            updates[op.path] = arr.item() if op.scalar_type is not None else arr
        return self._skeleton.replace(updates)

    def host_apply(self, *args: Any) -> tuple[np.ndarray, ...]:
        """``apply`` on the host; the JAX-valued output leaves in spec order."""
        if self.loop_mask is not None:
            return self._loop_apply(args)
        flat = self.endpoints.apply(self.inputs(args))
        spec = self._learn_spec(spec_from_flat(flat, "a recorded concrete call"))
        self.last_others = {
            leaf.path: flat[leaf.path].value
            for leaf in spec.leaves
            if leaf.kind == "other"
        }
        return tuple(
            _fit(
                flat[leaf.path].value,
                leaf.shape,
                leaf.dtype,
                f"output {leaf.path!r} of apply",
            )
            for leaf in spec.traced
        )

    def host_jvp(
        self, wrt: tuple[str, ...], outs: tuple[str, ...], batch: int, *args: Any
    ) -> tuple[np.ndarray, ...]:
        """``J t`` for the outputs ``outs``, tangents on the inputs ``wrt``.

        With ``batch > 0`` the tangents carry a leading batch axis
        (:meth:`Endpoints.jvp_many` decides how the batch is computed).
        """
        if self.loop_mask is not None:
            return self._loop_jvp(wrt, outs, batch, args)
        primals, tangents = args[: self.n], args[self.n :]
        spec = self.spec()
        prefix = (batch,) if batch else ()
        # Outputs the schema does not mark Differentiable get NaN tangents (their
        # derivative is unknown, not zero); the endpoint is asked for the others only.
        diff = tuple(o for o in outs if spec.leaf(o).differentiable)
        result: Mapping[str, Any] = {}
        if diff:
            inputs = self.inputs(primals)
            shapes = {o: spec.leaf(o).shape for o in diff}
            t = dict(zip(wrt, map(np.asarray, tangents), strict=True))
            if batch:
                result = self.endpoints.jvp_many(
                    inputs, wrt, diff, t, shapes, use_jacobian=self.materialize_jacobian
                )
            else:
                result = self.endpoints.jvp(inputs, wrt, diff, t, shapes)
        return self._jvp_outputs(outs, prefix, result)

    def _jvp_outputs(
        self, outs: Sequence[str], prefix: tuple[int, ...], result: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        """JVP results as the primitive returns them (NaN where there is no derivative)."""
        spec = self.spec()
        return tuple(
            _fit(
                result[o],
                (*prefix, *spec.leaf(o).shape),
                spec.leaf(o).dtype,
                f"JVP of output {o!r}",
            )
            if o in result
            else np.full((*prefix, *spec.leaf(o).shape), np.nan, spec.leaf(o).dtype)
            for o in outs
        )

    def host_vjp(
        self, wrt: tuple[str, ...], outs: tuple[str, ...], batch: int, *args: Any
    ) -> tuple[np.ndarray, ...]:
        """``ct J`` for the inputs ``wrt``, cotangents on the outputs ``outs``.

        With ``batch > 0`` the cotangents carry a leading batch axis
        (:meth:`Endpoints.vjp_many` decides how the batch is computed).
        """
        if self.batch_of is not None and self.loop_mask is not None:
            host = partial(self.batch_of[0].host_vjp, wrt, outs, batch)
            return self._loop_reverse(wrt, args, len(outs), batch, host)
        primals, cts = args[: self.n], args[self.n :]
        inputs = self.inputs(primals)
        ct = dict(zip(outs, map(np.asarray, cts), strict=True))
        shapes = self.differentiable_shapes()
        if batch:
            result = self.endpoints.vjp_many(
                inputs,
                wrt,
                outs,
                ct,
                use_jacobian=self.materialize_jacobian,
                output_shapes=shapes,
            )
        else:
            result = self.endpoints.vjp(inputs, wrt, outs, ct, output_shapes=shapes)
        return tuple(self._fit_input(result[p], p, "VJP", batch) for p in wrt)

    def jacobian_steps(
        self, forward: bool, wrt: tuple[str, ...], outs: tuple[str, ...], batch: int
    ) -> tuple[Callable[..., Any], list[tuple[int, ...]], Callable[..., Any]] | None:
        """``host_jvp``/``host_vjp`` of a batch at one point, as two host steps.

        When ``Endpoints`` serves the batch from one Jacobian: the first step
        (the primals in, the float64 Jacobian blocks out, one per ``(output,
        input)`` pair, of the returned shapes) depends on the point only, so
        identical requests under ``jit`` are one computation XLA can merge;
        the second contracts the blocks with the vectors (the vectors after
        the blocks), in ``Endpoints``. ``None`` when the batch is not served
        that way.
        """
        if self.loop_mask is not None:
            return None
        endpoints = self.endpoints
        mode = "forward" if forward else "reverse"
        if not endpoints.uses_jacobian(self.materialize_jacobian, mode, batch):
            return None
        spec = self.spec()
        diff = tuple(o for o in outs if spec.leaf(o).differentiable)
        if not diff or not wrt or (not forward and diff != outs):
            return None
        ops = {p: self.operands[self.index[p]] for p in wrt}
        out_shapes = {o: spec.leaf(o).shape for o in diff}
        pairs = [(o, p) for o in diff for p in wrt]

        def blocks(*primals: Any) -> tuple[np.ndarray, ...]:
            jac = endpoints.jacobian_blocks(self.inputs(primals), wrt, diff, out_shapes)
            return tuple(jac[o][p] for o, p in pairs)

        def contract(*args: Any) -> tuple[np.ndarray, ...]:
            jac: dict[str, dict[str, np.ndarray]] = {o: {} for o in diff}
            for (o, p), block in zip(pairs, args[: len(pairs)], strict=True):
                jac[o][p] = np.asarray(block)
            vectors = [np.asarray(v) for v in args[len(pairs) :]]
            if forward:
                result = endpoints.jvp_from_jacobian(
                    jac, dict(zip(wrt, vectors, strict=True))
                )
                return self._jvp_outputs(outs, (batch,), result)
            result = endpoints.vjp_from_jacobian(
                jac,
                dict(zip(outs, vectors, strict=True)),
                {p: op.shape for p, op in ops.items()},
                {p: op.dtype for p, op in ops.items()},
            )
            return tuple(self._fit_input(result[p], p, "VJP", batch) for p in wrt)

        shapes = [(*out_shapes[o], *ops[p].shape) for o, p in pairs]
        return blocks, shapes, contract

    def host_hvp(
        self,
        wrt: tuple[str, ...],
        outs: tuple[str, ...],
        tan: tuple[str, ...],
        *args: Any,
    ) -> tuple[np.ndarray, ...]:
        """``d/de VJP(x + e t, ct)`` for the inputs ``wrt`` (``Endpoints.vjp_jvp``)."""
        if self.batch_of is not None and self.loop_mask is not None:
            host = partial(self.batch_of[0].host_hvp, wrt, outs, tan)
            rest_mask = [self.loop_mask[self.index[p]] for p in tan]
            return self._loop_reverse(wrt, args, len(outs), 0, host, rest_mask)
        n_ct = len(outs)
        primals = args[: self.n]
        cts = args[self.n : self.n + n_ct]
        tangents = args[self.n + n_ct :]
        result = self.endpoints.vjp_jvp(
            self.inputs(primals),
            wrt,
            outs,
            dict(zip(outs, map(np.asarray, cts), strict=True)),
            dict(zip(tan, map(np.asarray, tangents), strict=True)),
            output_shapes=self.differentiable_shapes(),
        )
        return tuple(self._fit_input(result[p], p, "second-order VJP") for p in wrt)

    def differentiable_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every differentiable output (from the spec).

        What a VJP needs to ask a Tesseract for all of them (with zero
        cotangents) when it cannot answer a partial request.
        """
        spec = self.spec()
        return {o: spec.leaf(o).shape for o in spec.differentiable_paths}

    def _fit_input(
        self, value: Any, path: str, what: str, batch: int = 0
    ) -> np.ndarray:
        op = self.operands[self.index[path]]
        shape = (batch, *op.shape) if batch else op.shape
        return _fit(value, shape, op.dtype, f"{what} of input {path!r}")


hold_weakly_in_jax_caches(TesseractCall)


def _fit(
    value: Any, shape: tuple[int, ...], dtype: np.dtype | None, what: str
) -> np.ndarray:
    arr = as_numpy(value)
    if arr.shape != tuple(shape):
        raise RuntimeError(
            f"the Tesseract returned shape {arr.shape} for the {what}, but "
            f"{tuple(shape)} was expected; if the output shapes come from "
            "abstract_eval, fix it so that it agrees with apply"
        )
    return np.asarray(arr, dtype=dtype)


# Arrays at least this large are handed to JAX through an aligned copy (see to_jax).
_HANDOVER_BYTES = 1 << 16
# XLA's CPU client adopts host memory without a copy only at this alignment.
_XLA_ALIGNMENT = 64


def to_jax(value: np.ndarray) -> jax.Array:
    """A host result as a JAX array, in one copy, holding nothing else alive.

    ``jnp.asarray`` of a NumPy array stages it through a compiled identity:
    two device copies. ``jax.device_put`` makes one, but JAX keeps the NumPy
    source referenced for as long as the device array lives and releases it
    only at a later JAX call (measured with JAX 0.10 on CPU): a gradient step
    at n = 1e6 then peaked at 3 input sizes and left the VJP's NumPy result
    allocated after the gradient was dropped. A large array is therefore
    copied once, by NumPy, into a 64-byte aligned buffer that JAX adopts
    without a copy (``from_dlpack(copy=False)``); the source is freed as soon
    as the caller drops it and the buffer with the JAX array. Small arrays,
    where the dispatch costs more than the copy, and any array JAX refuses to
    adopt take ``jnp.asarray``.
    """
    if value.nbytes < _HANDOVER_BYTES:
        return jnp.asarray(value)
    raw = np.empty(value.nbytes + _XLA_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _XLA_ALIGNMENT
    own = raw[start : start + value.nbytes].view(value.dtype).reshape(value.shape)
    np.copyto(own, value)
    try:
        return jax.dlpack.from_dlpack(own, copy=False)
    except (BufferError, TypeError, ValueError):  # a dtype or layout JAX cannot adopt
        return jnp.asarray(value)


# --------------------------------------------------------------------------
# Splitting the inputs
# --------------------------------------------------------------------------


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _operand_dtype(leaf: Leaf) -> np.dtype:
    """What JAX sees of an array leaf: its compute dtype, canonicalised."""
    return canonical_dtype(leaf.compute_dtype)


def _scalar_type(value: Any) -> type:
    kind = np.dtype(value.dtype).kind
    return bool if kind == "b" else int if kind in "iu" else float


def _to_host(leaf: Leaf) -> Any:
    """A concrete leaf as the Tesseract gets it (tracers are left alone).

    Differentiable arrays in their compute dtype (what ``grad`` sees); other
    JAX arrays as NumPy (scalar fields as Python numbers); the rest unchanged.
    """
    value = leaf.value
    if not is_concrete(value):
        return value
    if leaf.is_array and leaf.differentiable:
        return as_numpy(value, _operand_dtype(leaf))
    if isinstance(value, jax.Array):
        arr = np.asarray(value)
        return arr if leaf.is_array else arr.item()
    return value


@dataclass
class Prepared:
    """The result of :func:`prepare_call`.

    Attributes:
        call: The static call description (``None`` for a concrete call).
        operand_values: The JAX values of the operands (traced calls).
        concrete_inputs: The flat NumPy inputs for a direct ``apply``
            (concrete calls), their nested tree already built.
        key: The input key (shapes, dtypes and static values).
        deferred: Every input is concrete, but we are tracing a ``jit``: the
            call is a primitive all the same, so it runs when the compiled
            program does (or not at all, if its result is unused), never
            while tracing. ``concrete_inputs`` is set too, for a Tesseract
            whose outputs only a direct call can give (strings).
    """

    call: TesseractCall | None
    operand_values: list[Any]
    concrete_inputs: FlatTree | None
    key: InputKey
    deferred: bool = False


def prepare_call(
    endpoints: Endpoints,
    inputs: Any,
    materialize_jacobian: bool | None,
    vmap_method: str | None = None,
    vmap_workers: int | None = None,
) -> Prepared:
    """Split ``inputs`` into operands and static parts (see the module docstring).

    One pass over the inputs: the flatten that checks them against the
    schema also converts every concrete leaf for the host (and, when nothing
    is traced, builds the nested inputs ``apply`` gets).

    Raises:
        SchemaError: If the inputs do not fit the Tesseract's InputSchema.
    """
    schema = endpoints.schema
    if not isinstance(inputs, Mapping) and not hasattr(inputs, "model_fields"):
        raise SchemaError(
            f"apply_tesseract expects the inputs as a dict following the Tesseract's "
            f"InputSchema, got {type(inputs).__name__}"
        )
    flat = schema.inputs.flatten(inputs, convert=_to_host)
    concrete = True
    key: list[tuple[Any, ...]] = []
    for path, leaf in flat.items():
        if leaf.shape is not None:  # an array leaf (Leaf.is_array)
            key.append(("a", path, tuple(leaf.shape), _operand_dtype(leaf).name))
        elif is_concrete(leaf.value):
            key.append(("v", path, _hashable(_to_python(leaf.value))))
        else:
            key.append(("t", path))
        concrete = concrete and is_concrete(leaf.value)
    input_key: InputKey = tuple(key)
    deferred = concrete and under_jit()
    if concrete and not deferred:
        return Prepared(None, [], flat, input_key)

    operands: list[Operand] = []
    values: list[Any] = []
    fill: dict[str, Any] = {}
    abstract: dict[str, Any] = {}
    for path, leaf in flat.items():
        value = leaf.value
        traced = not is_concrete(value)
        if leaf.shape is not None and (leaf.differentiable or traced):
            dtype = (
                _operand_dtype(leaf)
                if leaf.differentiable
                else canonical_dtype(leaf.dtype)
            )
            if traced:
                value = value.astype(dtype) if value.dtype != dtype else value
            else:
                value = jnp.asarray(value)
            spec = leaf.spec
            operands.append(
                Operand(
                    path,
                    leaf.differentiable,
                    tuple(leaf.shape),
                    dtype,
                    None,
                    rank_free=spec is not None and spec.shape is None,
                    fixed_rank=(
                        spec.describe()
                        if spec is not None and spec.shape is not None
                        else None
                    ),
                )
            )
            values.append(value)
            fill[path] = placeholder(leaf.shape, dtype)
        elif traced:  # a Python-scalar field that jit turned into a tracer
            stype = _scalar_type(value)
            operands.append(
                Operand(
                    path, False, tuple(value.shape), canonical_dtype(value.dtype), stype
                )
            )
            values.append(value)
            fill[path] = stype(0)
            abstract[path] = stype(0)
        if leaf.shape is not None:
            compute_dtype = leaf.compute_dtype
            assert compute_dtype is not None  # an array leaf always has a dtype
            abstract[path] = {"shape": list(leaf.shape), "dtype": compute_dtype.name}
    skeleton = flat.replace(fill)
    options = (materialize_jacobian, vmap_method, vmap_workers)
    interned = _interning_key(endpoints, skeleton, operands, options)
    call = _INTERNED.get(interned) if interned is not None else None
    if call is None:
        call = TesseractCall(
            endpoints,
            skeleton,
            tuple(operands),
            input_key,
            abstract,
            materialize_jacobian,
            vmap_method=vmap_method,
            vmap_workers=vmap_workers,
        )
        if interned is not None:
            with _INTERN_LOCK:
                call = _INTERNED.setdefault(interned, call)
    return Prepared(call, values, flat if deferred else None, input_key, deferred)


# Under ``jit``, identical calls (same client, operand shapes and dtypes, same
# static values, same options) share one TesseractCall: their primitives then
# have equal parameters and one host callback, which XLA's common-subexpression
# pass merges (the callback is declared free of side effects), so two identical
# calls in one program make one Tesseract call. Held weakly: an entry lives as
# long as a jaxpr or compiled program holds its call. Eager transformations get
# a fresh call each time (their host functions keep per-call state).
_INTERN_LOCK = threading.Lock()
_INTERNED: weakref.WeakValueDictionary[Any, TesseractCall] = (
    weakref.WeakValueDictionary()
)


def _interning_key(
    endpoints: Endpoints,
    skeleton: FlatTree,
    operands: Sequence[Operand],
    options: tuple[Any, ...],
) -> Any:
    """What makes two traced calls the same call, or ``None`` to never share it.

    Static values compare by value when hashable and by identity otherwise
    (a NumPy array: the interned call's skeleton keeps that very object
    alive, so its id cannot be reused while the entry exists).
    """
    if not under_jit():
        return None
    statics = []
    traced = {op.path for op in operands}
    for path, leaf in skeleton.items():
        if path in traced:
            continue
        value = leaf.value
        try:
            hash(value)
        except TypeError:
            value = ("id", id(value))
        else:
            value = ("value", type(value), value)
        statics.append((path, value))
    return (
        id(endpoints.tesseract),
        tuple(operands),
        tuple(statics),
        options,
    )


def _to_python(value: Any) -> Any:
    if isinstance(value, jax.Array | np.generic):
        return np.asarray(value).item()
    return value
