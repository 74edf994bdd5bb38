"""The autograd Functions behind ``apply_tesseract``: a small closed family.

A Tesseract is a black box reached through NumPy, so PyTorch cannot trace it;
each derivative has to be its own ``torch.autograd.Function`` whose forward
calls one method of :class:`~tess_ad._endpoints.Endpoints`. Six Functions
cover first and second order, in both modes::

    Apply(x)              = f(x)                       -> Endpoints.apply
    VJP(x, ct)            = J(x)^T ct                  -> Endpoints.vjp
    JVP(x, t)             = J(x) t                     -> Endpoints.jvp
    VJPMany(x, ct[B])     = J(x)^T ct_b for each row   -> Endpoints.vjp_many
    JVPMany(x, t[B])      = J(x) t_b for each row      -> Endpoints.jvp_many
    VJPJVP(x, ct, t)      = d/de J(x + e t)^T ct       -> Endpoints.vjp_jvp (2 VJP calls)

and each rule of one is written with the others, so that a rule applied to
tensors that are themselves being differentiated (``create_graph=True``,
``torch.func`` nesting) records a graph instead of escaping it:

* ``Apply.backward`` = VJP, ``Apply.jvp`` = JVP.
* ``VJP.backward(g)``: w.r.t. ``x`` it is ``d/dx <g, J^T ct> = VJPJVP(x, ct, g)``
  (second derivatives commute), w.r.t. ``ct`` it is ``J g = JVP(x, g)``.
  ``VJP.jvp(tx, tct) = VJPJVP(x, ct, tx) + VJP(x, tct)`` (linear in ``ct``).
* ``JVP.backward(g)``: w.r.t. ``x`` it is ``VJPJVP(x, g, t)``, w.r.t. ``t`` it is
  ``VJP(x, g)``. ``JVP.jvp`` along ``t`` only (it is linear in ``t``);
  forward-over-forward in ``x`` would need a third endpoint and is refused.
* ``VJPMany``/``JVPMany`` are VJP/JVP over a batch of rows at one point, with
  the same rules row by row (their linear parts batched again).
* ``VJPJVP`` is the end of the chain: third derivatives are refused.

Why this shape:

* NumPy conversion happens only inside ``forward``, where ``torch.func``
  guarantees plain tensors; the Functions use the ``setup_context`` style and
  save tensors with ``save_for_backward`` / ``save_for_forward``, as
  ``torch.func`` requires.
* ``vmap`` has an explicit rule per Function (``generate_vmap_rule`` stays
  off). A batch of cotangents or tangents at one point (``jacrev``,
  ``jacfwd``, ``vmap`` of a VJP function) becomes one ``VJPMany``/``JVPMany``,
  so :class:`~tess_ad._endpoints.Endpoints` chooses between one ``jacobian``
  call and one call per row, exactly as for ``jax.jacrev``/``jax.jacfwd``.
  A batch of points runs the Function once on a call made for the batch
  (:meth:`~._call.TesseractCall.vectorized`: one Tesseract call, or
  :meth:`~._call.TesseractCall.looped`: one per element), as the
  ``vmap_method`` and :func:`tess_ad._vmap.plan` say; the rest (second
  order, a batch of rows at a batch of points) loops over the batch and stacks.
* PyTorch's legacy vmap (``is_grads_batched=True``, ``jacobian(...,
  vectorize=True)``, ``gradcheck(..., check_batched_grad=True)``) does not
  consult ``vmap`` rules: :class:`_Function` ``apply`` notices its batched
  tensors and runs the same rule on the plain tensors underneath, so a batch
  of cotangents at one point is one ``VJPMany`` there too.
* Gradients are ``None`` when unused (``set_materialize_grads(False)``);
  ``Endpoints`` drops all-zero cotangents and tangents before calling the
  Tesseract, so only outputs that matter are requested from the VJP endpoint.
* Non-tensor arguments (the :class:`~._call.TesseractCall`, index and path
  tuples) come first in every ``forward``; tensor arguments follow as
  ``*xs`` (one per tensor input leaf) then cotangents/tangents.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .._vmap import VECTORIZING, missing_batch_axis_error
from ._call import TesseractCall
from ._compat import (
    any_legacy_batched,
    is_legacy_batched,
    legacy_rebatch,
    legacy_unbatch,
    plain_backward,
)
from ._convert import numpy_dtype, to_tensor

__all__ = ["Apply"]

_NO_THIRD_ORDER = (
    "tess_ad.torch differentiates a Tesseract at most twice: second derivatives "
    "come from central differences of its VJP (Endpoints.vjp_jvp), which are not "
    "differentiated again. Stop at double backward / hessian, or differentiate a "
    "lower-order quantity."
)
_NO_FORWARD_OVER_FORWARD = (
    "forward-over-forward differentiation of a Tesseract (e.g. jacfwd(jacfwd(f))) "
    "is not supported: it needs second directional derivatives of the outputs. "
    "Use reverse mode for one of the two levels instead, e.g. "
    "torch.func.jacfwd(torch.func.jacrev(f)) or torch.func.hessian(f)."
)


def _needed(ctx: Any, call: TesseractCall, offset: int) -> tuple[int, ...]:
    """Indices of the differentiable tensor arguments that need a gradient."""
    flags = ctx.needs_input_grad[offset : offset + call.n_args]
    return tuple(i for i, need in enumerate(flags) if need and call.differentiable[i])


def _present(values: Sequence[Any]) -> list[tuple[int, Any]]:
    """``(position, value)`` of the entries that are not ``None``."""
    return [(k, v) for k, v in enumerate(values) if v is not None]


def _scatter(n: int, idx: Sequence[int], values: Sequence[Any]) -> list[Any]:
    out: list[Any] = [None] * n
    for i, v in zip(idx, values, strict=True):
        out[i] = v
    return out


def _sum(terms: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    total = terms[0]
    for term in terms[1:]:
        total = tuple(a + b for a, b in zip(total, term, strict=True))
    return total


def _check_batch(info: Any) -> None:
    if info.batch_size == 0:
        raise ValueError(
            "torch.func.vmap over an empty batch: tess_ad.torch maps a Tesseract "
            "call over the batch one element at a time, and there is no element "
            "to learn the output shapes from. Skip the call for empty batches."
        )


def _loop(
    fn: type[torch.autograd.Function],
    static: Sequence[Any],
    tensors: Sequence[torch.Tensor],
    dims: Sequence[int | None],
    size: int,
) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
    """``fn`` once per batch element, stacked: the vmap rule of last resort."""
    results = []
    for b in range(size):
        sample = [
            t if d is None else t.select(d, b)
            for t, d in zip(tensors, dims, strict=True)
        ]
        results.append(fn.apply(*static, *sample))
    outs = tuple(torch.stack(column) for column in zip(*results, strict=True))
    return outs, (0,) * len(outs)


def _sequential_vmap(fn: type[torch.autograd.Function], n_static: int) -> Any:
    """A ``vmap`` rule that calls ``fn`` once per batch element and stacks."""

    def vmap(info: Any, in_dims: Sequence[int | None], *args: Any) -> Any:
        _check_batch(info)
        return _loop(
            fn, args[:n_static], args[n_static:], in_dims[n_static:], info.batch_size
        )

    return staticmethod(vmap)


def _lead(t: torch.Tensor, d: int | None, how: str, size: int) -> torch.Tensor:
    """``t`` with the batch axis first: moved there, or made as ``how`` says."""
    if d is not None:
        return t.movedim(d, 0)
    if how in ("batch", "broadcast"):
        return t.expand(size, *t.shape)
    if how == "expand":
        return t.unsqueeze(0)
    return t


def _for_batch(
    call: TesseractCall,
    xs: Sequence[torch.Tensor],
    dims: Sequence[int | None],
    carries: Sequence[bool],
    size: int,
) -> tuple[TesseractCall, list[torch.Tensor], list[str]]:
    """The call that runs a ``vmap`` batch, its tensor arguments, and how each was made.

    One Tesseract call when the ``vmap_method`` allows it (arguments as
    :func:`tess_ad._vmap.plan` says), else one call per element (the
    arguments in ``carries`` get the batch axis, the others are shared).
    """
    steps = call.plan(carries)
    if steps is None:
        steps = ["batch" if c else "keep" for c in carries]
        batch = call.looped(size, carries)
    else:
        batch = call.vectorized(size, [h == "expand" for h in steps])
    args = [_lead(x, d, h, size) for x, d, h in zip(xs, dims, steps, strict=True)]
    return batch, args, steps


def _one_point_vmap(
    fn: type[torch.autograd.Function], many: type[torch.autograd.Function]
) -> Any:
    """A ``vmap`` rule for VJP/JVP-like Functions ``(call, idx, paths, *xs, *vs)``.

    When only the vectors ``vs`` are batched (one point, many rows: ``jacrev``,
    ``jacfwd``), the batch goes to ``many`` in one call; a batch that is
    already a ``many`` batch (``vmap`` of ``jacrev``) folds into it. A batch of
    points (``vmap`` of ``grad``) is one Tesseract call under a vectorising
    ``vmap_method``, else one call per element; so is ``jacfwd`` under a
    vectorising method when there is no ``jacobian`` endpoint (the primal
    broadcast, as tesseract-jax does).
    """

    def vmap(info: Any, in_dims: Sequence[int | None], *args: Any) -> Any:
        _check_batch(info)
        call: TesseractCall = args[0]
        n = call.n_args
        tensors, dims = args[3:], in_dims[3:]
        size = info.batch_size
        at_points = any(d is not None for d in dims[:n])
        if fn is not many and (at_points or _broadcast_jacfwd(call, fn)):
            return _batch_of_points(fn, call, args[1], args[2], tensors, dims, size)
        if at_points:
            return _loop(fn, args[:3], tensors, dims, size)
        rows = fn is many  # these vectors already carry a batch of rows
        vecs = []
        for v, d in zip(tensors[n:], dims[n:], strict=True):
            v = v.expand(size, *v.shape) if d is None else v.movedim(d, 0)
            vecs.append(v.reshape(size * v.shape[1], *v.shape[2:]) if rows else v)
        outs = many.apply(*args[:3], *tensors[:n], *vecs)
        if rows:
            outs = tuple(o.reshape(size, -1, *o.shape[1:]) for o in outs)
        return tuple(outs), (0,) * len(outs)

    return staticmethod(vmap)


def _broadcast_jacfwd(call: TesseractCall, fn: Any) -> bool:
    """``jacfwd`` under a vectorising method, with no ``jacobian`` call to make instead."""
    return (
        fn is JVP
        and call.vmap_method in VECTORIZING
        and not call.endpoints.has_jacobian
    )


def _batch_of_points(
    fn: Any,
    call: TesseractCall,
    idx: tuple[int, ...],
    paths: tuple[str, ...],
    tensors: Sequence[torch.Tensor],
    dims: Sequence[int | None],
    size: int,
) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
    """A VJP or JVP at a batch of points, through the call that runs the batch.

    Which arguments carry the batch: the batched ones; for a JVP also those
    whose tangent is batched (a tangent takes its primal's shape); for a VJP
    every input asked for (``vmap`` of a VJP wants per-element gradients,
    also of an input shared by every element).
    """
    n = call.n_args
    carries = [d is not None for d in dims[:n]]
    vec_dims = dims[n:]
    if fn is VJP:
        for i in idx:
            carries[i] = True
    else:
        for i, d in zip(idx, vec_dims, strict=True):
            carries[i] = carries[i] or d is not None
    batch, xs, steps = _for_batch(call, tensors[:n], dims[:n], carries, size)
    if fn is VJP:  # cotangents of the batch's outputs: they all carry the axis
        vecs = [
            _lead(v, d, "batch", size)
            for v, d in zip(tensors[n:], vec_dims, strict=True)
        ]
    else:  # a tangent takes its primal's shape
        vecs = [
            _lead(v, d, steps[i], size)
            for i, v, d in zip(idx, tensors[n:], vec_dims, strict=True)
        ]
    outs = fn.apply(batch, idx, paths, *xs, *vecs)
    return tuple(outs), (0,) * len(outs)


def _rows(
    fn: type[torch.autograd.Function],
    static: Sequence[Any],
    before: Sequence[torch.Tensor],
    batched: Sequence[torch.Tensor],
    tail: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, ...]:
    """``fn(*static, *before, *row_b, *tail)`` for each row ``b`` of ``batched``, stacked."""
    size = batched[0].shape[0]
    results = [
        fn.apply(*static, *before, *(v[b] for v in batched), *tail) for b in range(size)
    ]
    return tuple(torch.stack(column) for column in zip(*results, strict=True))


class _VmapInfo(NamedTuple):
    """What a ``vmap`` rule reads of ``torch.func``'s info, for a legacy batch."""

    batch_size: int
    randomness: str = "error"


class _Function(torch.autograd.Function):
    """An ``autograd.Function`` whose ``vmap`` rule also serves PyTorch's legacy vmap.

    ``torch.func.vmap`` calls a Function's ``vmap`` staticmethod. The legacy
    vmap behind ``is_grads_batched=True`` does not: it would run ``forward``
    on batched tensors that NumPy cannot read. ``apply`` catches that case,
    unwraps the batched arguments (batch axis first), runs the ``vmap`` rule
    and wraps its results again; otherwise it is ``Function.apply`` itself.
    """

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        if any_legacy_batched(args):
            return _legacy_vmap(cls, args)
        return super().apply(*args, **kwargs)


def _legacy_vmap(cls: type[torch.autograd.Function], args: Sequence[Any]) -> Any:
    """``cls.vmap`` applied to the legacy-batched arguments of ``cls.apply(*args)``."""
    level = size = None
    plain: list[Any] = []
    dims: list[int | None] = []
    for arg in args:
        if not is_legacy_batched(arg):
            plain.append(arg)
            dims.append(None)
            continue
        arg_level, value = legacy_unbatch(arg)
        if level not in (None, arg_level) or size not in (None, value.shape[0]):
            raise NotImplementedError(
                "tess_ad.torch: a Tesseract call received tensors from different "
                "legacy vmaps at once; use torch.func.vmap instead."
            )
        level, size = arg_level, value.shape[0]
        plain.append(value)
        dims.append(0)
    assert level is not None and size is not None
    outs, out_dims = cls.vmap(_VmapInfo(size), tuple(dims), *plain)
    return tuple(
        legacy_rebatch(o, d, level) for o, d in zip(outs, out_dims, strict=True)
    )


class Apply(_Function):
    """``f(x)``: one ``apply`` call; returns the differentiable array outputs.

    Arguments: ``(call, *xs)``. The call's flattened outputs (with the
    non-differentiable ones) are kept in ``call.out``.
    """

    @staticmethod
    def forward(call: TesseractCall, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = call.inputs(xs)
        flat = call.record(call.endpoints.apply(inputs), inputs)
        return _tensors(
            [flat[p].value for p in call.out_paths],
            [call.device] * len(call.out_paths),
            [None] * len(call.out_paths),
            _arrays(inputs),
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        call, *xs = inputs
        ctx.call = call
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*xs)
        ctx.save_for_forward(*xs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
        call: TesseractCall = ctx.call
        xs = ctx.saved_tensors
        need = _needed(ctx, call, 1)
        used = _present(grads)
        result: list[Any] = [None] * call.n_args
        if need and used:
            out_paths = tuple(call.out_paths[j] for j, _ in used)
            cts = [g for _, g in used]
            if any(call.expanded[i] for i in need):
                return (None, *_expanded_backward(call, need, out_paths, xs, cts))
            # Nothing records this VJP's rules: skip its Function (not for a
            # batch of cotangents, which its vmap rule turns into one VJPMany).
            if plain_backward() and not any_legacy_batched(cts):
                gx = _vjp(call, need, out_paths, xs, cts, many=False, inputs=call.sent)
            else:
                gx = VJP.apply(call, need, out_paths, *xs, *cts)
            result = _scatter(call.n_args, need, gx)
        return (None, *result)

    @staticmethod
    def jvp(ctx: Any, *tangents: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        call: TesseractCall = ctx.call
        xs = ctx.saved_tensors
        given = [(i, t) for i, t in _present(tangents[1:]) if call.differentiable[i]]
        if not given:
            return _zero_outputs(call, call.out_paths)
        t_idx = tuple(i for i, _ in given)
        return JVP.apply(call, t_idx, call.out_paths, *xs, *(t for _, t in given))

    @staticmethod
    def vmap(
        info: Any, in_dims: Sequence[int | None], call: TesseractCall, *xs: torch.Tensor
    ) -> Any:
        """One ``apply`` for the batch, or one per element (``vmap_method``).

        The outputs that are not tensors come back with the batch axis in
        ``call.out``.
        """
        _check_batch(info)
        size = info.batch_size
        dims = in_dims[1:]
        carries = [d is not None for d in dims]
        batch, args, _ = _for_batch(call, xs, dims, carries, size)
        outs = Apply.apply(batch, *args)
        if batch.endpoints is call.endpoints:  # one call: the Tesseract made the axis
            for path, out in zip(batch.out_paths, outs, strict=True):
                if out.dim() == 0 or out.shape[0] != size:
                    raise missing_batch_axis_error(
                        str(call.vmap_method),
                        size,
                        f"output {path!r} has shape {tuple(out.shape)}",
                    )
        call.record_batch(batch)
        return outs, (0,) * len(outs)


def _expanded_backward(
    call: TesseractCall,
    need: tuple[int, ...],
    out_paths: tuple[str, ...],
    xs: Sequence[torch.Tensor],
    cts: Sequence[torch.Tensor],
) -> list[Any]:
    """The gradients of a vectorised call with arguments expanded to a leading 1.

    Such an argument is shared by the batch; its gradient is asked per
    element (the argument broadcast to the batch) and summed, whatever the
    Tesseract's VJP makes of a broadcast input.
    """
    assert call.batch_of is not None
    size = call.batch_of[1]
    wide = [
        x.expand(size, *x.shape[1:]) if call.expanded[i] and i in need else x
        for i, x in enumerate(xs)
    ]
    gx = VJP.apply(call, need, out_paths, *wide, *cts)
    gx = [
        g.sum(0, keepdim=True) if call.expanded[i] else g
        for i, g in zip(need, gx, strict=True)
    ]
    return _scatter(call.n_args, need, gx)


def _arrays(inputs: Any, *vectors: Mapping[str, Any]) -> list[Any]:
    """The arrays an endpoint was given: its results must not share their memory."""
    found = [leaf.value for leaf in inputs.values() if leaf.is_array]
    for v in vectors:
        found.extend(v.values())
    return found


def _tensors(
    values: Sequence[Any],
    devices: Sequence[torch.device],
    dtypes: Sequence[np.dtype | None],
    avoid: list[Any],
) -> tuple[torch.Tensor, ...]:
    """Endpoint results as tensors; none shares memory with ``avoid`` or another."""
    out = []
    for value, device, dtype in zip(values, devices, dtypes, strict=True):
        out.append(to_tensor(value, device, dtype, avoid))
        avoid.append(value)
    return tuple(out)


def _vjp_result(
    call: TesseractCall,
    in_idx: Sequence[int],
    xs: Sequence[torch.Tensor],
    result: Any,
    avoid: list[Any],
) -> tuple[torch.Tensor, ...]:
    """Endpoint results for the inputs ``in_idx`` as tensors like those inputs."""
    return _tensors(
        [result[call.paths[i]] for i in in_idx],
        [xs[i].device for i in in_idx],
        [numpy_dtype(xs[i].dtype) for i in in_idx],
        avoid,
    )


def _vjp(
    call: TesseractCall,
    in_idx: tuple[int, ...],
    out_paths: tuple[str, ...],
    xs: Sequence[torch.Tensor],
    cts: Sequence[torch.Tensor],
    *,
    many: bool,
    inputs: Any = None,
) -> tuple[torch.Tensor, ...]:
    """``J(x)^T ct`` (per row of ``cts`` if ``many``) on plain tensors: the VJP's numbers.

    ``inputs``: ``xs`` already converted (the forward's), if at hand.
    """
    product = call.endpoints.vjp_many if many else call.endpoints.vjp
    if inputs is None:
        inputs = call.inputs(xs)
    ct = call.vectors(out_paths, cts)
    result = product(
        inputs,
        [call.paths[i] for i in in_idx],
        out_paths,
        ct,
        output_shapes=call.out_shapes(),
    )
    return _vjp_result(call, in_idx, xs, result, _arrays(inputs, ct))


def _jvp_result(
    call: TesseractCall, out_paths: Sequence[str], result: Any, avoid: list[Any]
) -> tuple[torch.Tensor, ...]:
    """Endpoint results for ``out_paths`` as tensors in the outputs' dtypes."""
    return _tensors(
        [result[p] for p in out_paths],
        [call.device] * len(out_paths),
        [call.out_dtype(p) for p in out_paths],
        avoid,
    )


class VJPJVP(_Function):
    """``d/de J(x + e t)^T ct`` at ``e = 0`` for the inputs ``in_idx``.

    Arguments: ``(call, in_idx, out_paths, t_idx, *xs, *cts, *ts)``. With the
    cotangent of a scalar loss this is a Hessian-vector product. Not
    differentiable further.
    """

    @staticmethod
    def forward(
        call: TesseractCall,
        in_idx: tuple[int, ...],
        out_paths: tuple[str, ...],
        t_idx: tuple[int, ...],
        *args: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        n, m = call.n_args, len(out_paths)
        xs, cts, ts = args[:n], args[n : n + m], args[n + m :]
        inputs = call.inputs(xs)
        ct = call.vectors(out_paths, cts)
        t = call.vectors([call.paths[i] for i in t_idx], ts)
        result = call.endpoints.vjp_jvp(
            inputs,
            [call.paths[i] for i in in_idx],
            out_paths,
            ct,
            t,
            output_shapes=call.out_shapes(),
        )
        return _vjp_result(call, in_idx, xs, result, _arrays(inputs, ct, t))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
        raise NotImplementedError(_NO_THIRD_ORDER)

    @staticmethod
    def jvp(ctx: Any, *tangents: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError(_NO_THIRD_ORDER)


def _second_order(
    call: TesseractCall,
    in_idx: tuple[int, ...],
    out_paths: tuple[str, ...],
    t_idx: tuple[int, ...],
    xs: Sequence[torch.Tensor],
    cts: Sequence[torch.Tensor],
    ts: Sequence[torch.Tensor],
    *,
    rows: bool,
    ts_rows: bool,
    reduce: bool,
) -> tuple[torch.Tensor, ...]:
    """``VJPJVP(x, ct, t)``, or per row when the cotangents carry a batch of rows.

    ``rows``: whether ``cts`` carry a leading batch of rows (in a ``*Many``
    Function); ``ts_rows``: whether ``ts`` carry the same batch too (else one
    ``t`` serves every row); ``reduce``: sum over the rows (a gradient with
    respect to the shared ``x``).
    """
    static = (call, in_idx, out_paths, t_idx)
    if not rows:
        return VJPJVP.apply(*static, *xs, *cts, *ts)
    per_row = _rows(
        VJPJVP,
        static,
        xs,
        [*cts, *ts] if ts_rows else list(cts),
        ts if not ts_rows else (),
    )
    return tuple(h.sum(0) for h in per_row) if reduce else per_row


def _vjp_function(many: bool) -> type[torch.autograd.Function]:
    """The VJP Function (``many=False``) or its batch-of-rows twin (``many=True``)."""

    class Function(_Function):
        @staticmethod
        def forward(
            call: TesseractCall,
            in_idx: tuple[int, ...],
            out_paths: tuple[str, ...],
            *args: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            xs, cts = args[: call.n_args], args[call.n_args :]
            return _vjp(call, in_idx, out_paths, xs, cts, many=many)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.call, ctx.in_idx, ctx.out_paths, *tensors = inputs
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(*tensors)
            ctx.save_for_forward(*tensors)

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
            call: TesseractCall = ctx.call
            n = call.n_args
            saved = ctx.saved_tensors
            xs, cts = saved[:n], saved[n:]
            gx: list[Any] = [None] * n
            gct: list[Any] = [None] * len(cts)
            # The incoming gradient lives in the space of the inputs in_idx: it is
            # the tangent direction of both second-order terms.
            direction = [(ctx.in_idx[k], g) for k, g in _present(grads)]
            if direction:
                t_idx = tuple(i for i, _ in direction)
                ts = [g for _, g in direction]
                need_x = _needed(ctx, call, 3)
                if need_x:  # d/dx <g, J^T ct> = VJPJVP(x, ct, g), summed over rows
                    hx = _second_order(
                        call,
                        need_x,
                        ctx.out_paths,
                        t_idx,
                        xs,
                        cts,
                        ts,
                        rows=many,
                        ts_rows=True,
                        reduce=True,
                    )
                    gx = _scatter(n, need_x, hx)
                need_ct = tuple(
                    j for j in range(len(cts)) if ctx.needs_input_grad[3 + n + j]
                )
                if need_ct:  # d/dct <g, J^T ct> = J g
                    paths = tuple(ctx.out_paths[j] for j in need_ct)
                    jt = (JVPMany if many else JVP).apply(call, t_idx, paths, *xs, *ts)
                    gct = _scatter(len(cts), need_ct, jt)
            return (None, None, None, *gx, *gct)

        @staticmethod
        def jvp(ctx: Any, *tangents: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
            call: TesseractCall = ctx.call
            n = call.n_args
            saved = ctx.saved_tensors
            xs, cts = saved[:n], saved[n:]
            tx = [
                (i, t)
                for i, t in _present(tangents[3 : 3 + n])
                if call.differentiable[i]
            ]
            tct = _present(tangents[3 + n :])
            terms = []
            if tx:  # along x: VJPJVP(x, ct, tx)
                t_idx = tuple(i for i, _ in tx)
                terms.append(
                    _second_order(
                        call,
                        ctx.in_idx,
                        ctx.out_paths,
                        t_idx,
                        xs,
                        cts,
                        [t for _, t in tx],
                        rows=many,
                        ts_rows=False,
                        reduce=False,
                    )
                )
            if tct:  # along ct: linear, the same product of the tangent
                paths = tuple(ctx.out_paths[j] for j, _ in tct)
                terms.append(
                    (VJPMany if many else VJP).apply(
                        call, ctx.in_idx, paths, *xs, *(t for _, t in tct)
                    )
                )
            if not terms:
                lead = (cts[0].shape[0],) if many else ()
                return tuple(
                    torch.zeros(
                        *lead, *xs[i].shape, dtype=xs[i].dtype, device=xs[i].device
                    )
                    for i in ctx.in_idx
                )
            return _sum(terms)

    return Function


def _jvp_function(many: bool) -> type[torch.autograd.Function]:
    """The JVP Function (``many=False``) or its batch-of-rows twin (``many=True``)."""

    class Function(_Function):
        @staticmethod
        def forward(
            call: TesseractCall,
            t_idx: tuple[int, ...],
            out_paths: tuple[str, ...],
            *args: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            xs, ts = args[: call.n_args], args[call.n_args :]
            paths = [call.paths[i] for i in t_idx]
            product = call.endpoints.jvp_many if many else call.endpoints.jvp
            inputs = call.inputs(xs)
            t = call.vectors(paths, ts)
            shapes = {p: call.out_shape(p) for p in out_paths}
            result = product(inputs, paths, out_paths, t, shapes)
            return _jvp_result(call, out_paths, result, _arrays(inputs, t))

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.call, ctx.t_idx, ctx.out_paths, *tensors = inputs
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(*tensors)
            ctx.save_for_forward(*tensors)

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
            call: TesseractCall = ctx.call
            n = call.n_args
            saved = ctx.saved_tensors
            xs, ts = saved[:n], saved[n:]
            gx: list[Any] = [None] * n
            gt: list[Any] = [None] * len(ts)
            used = _present(grads)
            if used:
                paths = tuple(ctx.out_paths[j] for j, _ in used)
                gs = [g for _, g in used]
                need_x = _needed(ctx, call, 3)
                if need_x:  # d/dx <g, J t> = VJPJVP(x, g, t), summed over rows
                    hx = _second_order(
                        call,
                        need_x,
                        paths,
                        ctx.t_idx,
                        xs,
                        gs,
                        ts,
                        rows=many,
                        ts_rows=True,
                        reduce=True,
                    )
                    gx = _scatter(n, need_x, hx)
                need_t = tuple(
                    k for k in range(len(ts)) if ctx.needs_input_grad[3 + n + k]
                )
                if need_t:  # d/dt <g, J t> = J^T g
                    vt = (VJPMany if many else VJP).apply(
                        call, tuple(ctx.t_idx[k] for k in need_t), paths, *xs, *gs
                    )
                    gt = _scatter(len(ts), need_t, vt)
            return (None, None, None, *gx, *gt)

        @staticmethod
        def jvp(ctx: Any, *tangents: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
            call: TesseractCall = ctx.call
            n = call.n_args
            xs = ctx.saved_tensors[:n]
            if any(call.differentiable[i] for i, _ in _present(tangents[3 : 3 + n])):
                raise NotImplementedError(_NO_FORWARD_OVER_FORWARD)
            tt = _present(tangents[3 + n :])
            if not tt:
                zeros = _zero_outputs(call, ctx.out_paths)
                if not many:
                    return zeros
                size = ctx.saved_tensors[n].shape[0]
                return tuple(z.expand(size, *z.shape) for z in zeros)
            t_idx = tuple(ctx.t_idx[k] for k, _ in tt)
            return (JVPMany if many else JVP).apply(
                call, t_idx, ctx.out_paths, *xs, *(t for _, t in tt)
            )

    return Function


def _named(cls: type, name: str, doc: str) -> Any:
    cls.__name__ = cls.__qualname__ = name
    cls.__doc__ = doc
    return cls


VJP = _named(
    _vjp_function(many=False),
    "VJP",
    """``J(x)^T ct`` for the inputs ``in_idx``; ``ct`` given for ``out_paths``.

    Arguments: ``(call, in_idx, out_paths, *xs, *cts)``; returns one gradient
    per index of ``in_idx``, in the dtype and on the device of that input.
    """,
)
VJPMany = _named(
    _vjp_function(many=True),
    "VJPMany",
    """``J(x)^T ct_b`` for each row ``b`` of the cotangents, at one point ``x``.

    Arguments as :class:`VJP`, with a leading batch axis on every cotangent;
    returns one ``(B, *x_i.shape)`` gradient per index of ``in_idx``. Made by
    the ``vmap`` rule of :class:`VJP`; its rules are VJP's, row by row.
    """,
)
JVP = _named(
    _jvp_function(many=False),
    "JVP",
    """``J(x) t`` for the outputs ``out_paths``; ``t`` given for the inputs ``t_idx``.

    Arguments: ``(call, t_idx, out_paths, *xs, *ts)``; returns one tangent per
    output path, in the output's dtype, on the caller's device.
    """,
)
JVPMany = _named(
    _jvp_function(many=True),
    "JVPMany",
    """``J(x) t_b`` for each row ``b`` of the tangents, at one point ``x``.

    Arguments as :class:`JVP`, with a leading batch axis on every tangent;
    returns one ``(B, *out_shape)`` tangent per output path. Made by the
    ``vmap`` rule of :class:`JVP`; its rules are JVP's, row by row.
    """,
)


def _zero_outputs(
    call: TesseractCall, out_paths: Sequence[str]
) -> tuple[torch.Tensor, ...]:
    """Zero tangents for ``out_paths`` (shape and dtype of one sample's outputs)."""
    return tuple(
        to_tensor(np.zeros(call.out_shape(p), call.out_dtype(p)), call.device)
        for p in out_paths
    )


# The vmap rules refer to the classes, so they are attached once all exist.
VJP.vmap = _one_point_vmap(VJP, VJPMany)
VJPMany.vmap = _one_point_vmap(VJPMany, VJPMany)
JVP.vmap = _one_point_vmap(JVP, JVPMany)
JVPMany.vmap = _one_point_vmap(JVPMany, JVPMany)
VJPJVP.vmap = _sequential_vmap(VJPJVP, 4)  # type: ignore[method-assign]

# ``torch.autograd.Function.apply`` binds its arguments to ``forward``'s
# signature on every call, and ``inspect.signature`` rebuilds that signature
# each time (about a third of the cost of an ``apply``). ``inspect`` reads a
# ready ``__signature__`` instead, so it is computed once here.
for _fn in (Apply, VJP, VJPMany, JVP, JVPMany, VJPJVP):
    _forward: Any = _fn.forward
    _forward.__signature__ = inspect.signature(_forward)
