"""Four JAX primitives that make a Tesseract call work under every transformation.

Why primitives and not ``jax.custom_vjp``/``custom_jvp``: a ``custom_vjp``
function refuses forward mode (``jvp``, ``jacfwd``, ``linearize``), and a
``custom_jvp`` rule is transposed by JAX, so reverse mode would run forward
JVPs instead of the Tesseract's VJP endpoint. With primitives we choose the
endpoint for each mode, and second order works because each derivative is
itself a primitive with its own rules:

=========  ==========================  =======================================
primitive  computes (via Endpoints)    derivative rules
=========  ==========================  =======================================
apply_p    ``apply``                   JVP: ``jvp_p`` (linear in tangents)
jvp_p      ``J t`` (``jvp``)           transpose: ``vjp_p``; JVP in ``t``: itself
vjp_p      ``ct J`` (``vjp``)          JVP in ``x``: ``hvp_p``; in ``ct``: itself;
                                       transpose in ``ct``: ``jvp_p``
hvp_p      ``d/de ct J(x + e t)``      bilinear in ``(ct, t)``; transpose in ``t``:
           (``vjp_jvp``: 2 VJPs)       itself with roles swapped (symmetric Hessian)
=========  ==========================  =======================================

So ``grad`` is apply + one VJP, ``jvp`` apply + one JVP, and ``hessian``
(``jacfwd(jacrev)``) takes Hessian-vector products from central differences of
the VJP, two VJP calls each. Forward-over-forward of ``jvp_p`` and third
derivatives are refused with a message (no endpoint gives them).

Every primitive has an abstract-eval rule (shapes from the call's
:class:`~tess_ad.jax._spec.OutputSpec`), an eager implementation (calls the
host function directly), a lowering (a host callback, emitted as
tesseract-jax does, declared free of side effects so XLA may drop unused
calls) and a batching rule.

Batching (``jax.vmap``) binds the same primitive once more, on a batched
:class:`~tess_ad.jax._call.TesseractCall`, so that every derivative rule
above applies to the batch unchanged:

* a *vectorised* call (``vmap_method`` ``expand_dims``, ``broadcast_all``,
  ``auto_experimental`` or ``auto``): the operands get a leading batch axis
  (``_vectorize_plan`` says which, by tesseract-jax's rules) and the
  Tesseract computes the whole batch in ONE call, returning the axis on every
  output;
* a *loop* call (``sequential``, or when the schema rules vectorising out):
  its host functions slice the batch, run the unbatched call per element
  (``vmap_workers`` at a time) and stack, or sum the VJP of an input shared
  by every element. Under ``jit`` this is one host callback for the batch.

A batch of (co)tangents at one unbatched point (``jacfwd``, ``jacrev``) is
different: ``jvp_p``/``vjp_p`` take the whole batch at once (parameter
``batch``) and the host hands it to ``Endpoints.jvp_many``/``vjp_many``,
which make one ``jacobian`` call when the Tesseract has that endpoint (see
``materialize_jacobian``) and one JVP/VJP call per row otherwise, the same
choice as for PyTorch (a vectorising method without a ``jacobian`` endpoint
makes ``jacfwd`` one JVP call with the primal broadcast, as tesseract-jax
does). Keeping this inside ``jvp_p``/``vjp_p``, rather than in a separate
Jacobian primitive, keeps their derivative rules: ``hessian`` of a loss
costs one Hessian-vector product per direction, not one per output element.
``hvp_p`` batches by binding once per element.

Host functions (``TesseractCall.host_*``) use NumPy only: calling
``jax.numpy`` inside a callback can deadlock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tess_ad._vmap import VECTORIZING, fixed_rank_error
from tess_ad._vmap import plan as vmap_plan

from ._call import TesseractCall, to_jax
from ._compat import (
    Primitive,
    ShapedArray,
    ad,
    batching,
    canonical_dtype,
    emit_python_callback,
    float0,
    mlir,
    under_jit,
)

__all__ = ["apply_p", "hvp_p", "jvp_p", "vjp_p"]

apply_p = Primitive("tesseract_apply")
jvp_p = Primitive("tesseract_jvp")
vjp_p = Primitive("tesseract_vjp")
hvp_p = Primitive("tesseract_vjp_jvp")
_ALL = (apply_p, jvp_p, vjp_p, hvp_p)
for _p in _ALL:
    _p.multiple_results = True

_FORWARD_OVER_FORWARD = (
    "the derivative of a Tesseract JVP with respect to the Tesseract's inputs is "
    "not supported (forward-over-forward, e.g. jacfwd(jacfwd(f)) or jvp of jvp, "
    "or any third derivative): no endpoint gives it. For second derivatives use "
    "jax.hessian (= jacfwd(jacrev(f))) or jacrev(jacrev(f)), which take "
    "Hessian-vector products from the VJP endpoint."
)
_THIRD_ORDER = (
    "third and higher derivatives of a Tesseract are not supported: its second "
    "derivatives already come from finite differences of the VJP endpoint."
)


# --------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------


def _avals(prim: Primitive, params: dict[str, Any]) -> list[ShapedArray]:
    call: TesseractCall = params["call"]
    if prim is apply_p:
        return [ShapedArray(lf.shape, lf.dtype) for lf in call.spec().traced]
    prefix = (params["batch"],) if params.get("batch") else ()
    if prim is jvp_p:
        spec = call.spec()
        return [
            ShapedArray((*prefix, *spec.leaf(o).shape), spec.leaf(o).dtype)
            for o in params["outs"]
        ]
    ops = [call.operands[call.index[p]] for p in params["wrt"]]
    return [ShapedArray((*prefix, *op.shape), op.dtype) for op in ops]


def _host(
    prim: Primitive, params: dict[str, Any]
) -> Callable[..., tuple[np.ndarray, ...]]:
    call: TesseractCall = params["call"]
    if prim is apply_p:
        return call.host_apply
    if prim is jvp_p:
        batch = params["batch"]
        if call.any_differentiable(params["outs"]):  # else only NaNs, no endpoint
            call.require_route(call.batch_route("forward") if batch else "forward")
        return partial(call.host_jvp, params["wrt"], params["outs"], batch)
    if prim is vjp_p:
        batch = params["batch"]
        call.require_route(call.batch_route("reverse") if batch else "reverse")
        return partial(call.host_vjp, params["wrt"], params["outs"], batch)
    call.require_route("reverse")
    return partial(call.host_hvp, params["wrt"], params["outs"], params["tan"])


def _abstract_eval(*_avals_in: Any, prim: Primitive, **params: Any) -> list[Any]:
    return _avals(prim, params)


def _impl(*args: Any, prim: Primitive, **params: Any) -> list[jax.Array]:
    host = _host(prim, params)
    return [to_jax(out) for out in host(*(np.asarray(a) for a in args))]


def _lowering(
    ctx: mlir.LoweringRuleContext, *args: Any, prim: Primitive, **params: Any
):
    host = _host(prim, params)
    steps = _jacobian_steps(prim, params)
    if steps is not None:
        return _lower_in_two_steps(ctx, args, params["call"].n, *steps)
    # The callback gets NumPy views of the operands (no device round trip, as
    # jax.pure_callback would make) and must return NumPy arrays with exactly
    # the avals' shapes and dtypes (the host functions cast and check).
    # No side effect declared: a Tesseract is a function of its inputs, so JAX
    # and XLA may drop a call whose result is unused (the forward apply inside
    # jit(grad) is dropped) and merge duplicate calls.
    # JAX types ctx.avals_in as AbstractValues; our operands' are ShapedArrays.
    results, _, keepalive = emit_python_callback(
        ctx,
        host,
        None,
        list(args),
        ctx.avals_in,  # type: ignore[arg-type]
        ctx.avals_out,
        has_side_effect=False,
    )
    ctx.module_context.add_keepalive(keepalive)
    return results


def _jacobian_steps(prim: Primitive, params: dict[str, Any]) -> Any:
    """A batch of JVPs/VJPs at one point served by one Jacobian, as two host steps.

    Only under ``jit`` (this is the lowering) and with 64-bit JAX types (the
    Jacobian blocks travel as float64): the first step depends on the point
    alone, so when several such batches share their point (``vmap`` over
    chunks of tangents) XLA merges the ``jacobian`` requests into one.
    """
    if prim not in (jvp_p, vjp_p) or not params["batch"]:
        return None
    if canonical_dtype(np.dtype(np.float64)) != np.float64:  # x64 is off
        return None
    call: TesseractCall = params["call"]
    return call.jacobian_steps(
        prim is jvp_p, params["wrt"], params["outs"], params["batch"]
    )


def _lower_in_two_steps(
    ctx: mlir.LoweringRuleContext,
    args: Sequence[Any],
    n: int,
    blocks: Callable[..., Any],
    shapes: Sequence[tuple[int, ...]],
    contract: Callable[..., Any],
) -> Any:
    """Lower ``contract(blocks(primals), vectors)`` as two pure host callbacks."""
    primal_avals = list(ctx.avals_in[:n])
    block_avals = [ShapedArray(tuple(s), np.dtype(np.float64)) for s in shapes]
    first = ctx.replace(avals_in=primal_avals, avals_out=block_avals)
    jac, _, keep_first = emit_python_callback(
        first,
        blocks,
        None,
        list(args[:n]),
        primal_avals,  # type: ignore[arg-type]
        block_avals,
        has_side_effect=False,
    )
    second_avals = [*block_avals, *ctx.avals_in[n:]]
    second = ctx.replace(avals_in=second_avals)
    results, _, keep_second = emit_python_callback(
        second,
        contract,
        None,
        [*jac, *args[n:]],  # type: ignore[list-item]
        second_avals,  # type: ignore[arg-type]
        ctx.avals_out,
        has_side_effect=False,
    )
    ctx.module_context.add_keepalive(keep_first)
    ctx.module_context.add_keepalive(keep_second)
    return results


for _p in _ALL:
    _p.def_impl(partial(_impl, prim=_p))
    _p.def_abstract_eval(partial(_abstract_eval, prim=_p))
    mlir.register_lowering(_p, partial(_lowering, prim=_p))


# --------------------------------------------------------------------------
# Helpers for the rules
# --------------------------------------------------------------------------


def _nonzero(t: Any) -> bool:
    if type(t) is ad.Zero or t is None:
        return False
    return getattr(t, "dtype", None) != float0


def _zero(x: Any) -> ad.Zero:
    return ad.Zero(jax.typeof(x).to_tangent_aval())


def _undefined(x: Any) -> bool:
    return isinstance(x, ad.UndefinedPrimal)


def _nonzero_paths(call: TesseractCall, tangents: Sequence[Any]) -> tuple[str, ...]:
    """Operand paths with a non-zero tangent; refuses non-differentiable ones."""
    paths = tuple(
        op.path for op, t in zip(call.operands, tangents, strict=True) if _nonzero(t)
    )
    call.check_differentiable(paths)
    return paths


def _sum_terms(terms: Sequence[Sequence[Any]]) -> list[Any]:
    out = list(terms[0])
    for term in terms[1:]:
        out = [a + b for a, b in zip(out, term, strict=True)]
    return out


class _NotLinearError(NotImplementedError, ValueError):
    """A transpose with respect to the Tesseract's inputs.

    Both types: ``NotImplementedError`` as before, ``ValueError`` as tesseract-jax
    raises for the same request.
    """


def _check_primals_known(primals: Sequence[Any], prim: str) -> None:
    if any(_undefined(p) for p in primals):
        raise _NotLinearError(
            f"{prim} is not linear in the Tesseract's inputs, yet this "
            "transformation transposes it with respect to them (they reached the "
            "transpose rule as UndefinedPrimal, e.g. jax.linear_transpose of a "
            "function of both primals and tangents): no endpoint gives that. "
            "Close over the primals (linearize at a point) and transpose in the "
            "tangents only."
        )


# --------------------------------------------------------------------------
# apply_p
# --------------------------------------------------------------------------


def _apply_jvp(primals: Sequence[Any], tangents: Sequence[Any], *, call: TesseractCall):
    wrt = _nonzero_paths(call, tangents)
    outs = apply_p.bind(*primals, call=call)
    out_tangents: list[Any] = [_zero(o) for o in outs]
    spec = call.spec()
    # Differentiable outputs, and non-differentiable float outputs: those get
    # NaN tangents (unknown, not zero: tesseract-jax's convention) and refuse a
    # cotangent in the transpose; integer and boolean outputs keep zero tangents.
    with_tangent = spec.tangent_paths
    if wrt and with_tangent:
        if spec.differentiable_paths:
            call.require_route("any")
        tans = jvp_p.bind(
            *primals,
            *(tangents[call.index[p]] for p in wrt),
            call=call,
            wrt=wrt,
            outs=with_tangent,
            batch=0,
        )
        position = {leaf.path: i for i, leaf in enumerate(spec.traced)}
        for o, t in zip(with_tangent, tans, strict=True):
            out_tangents[position[o]] = t
    return outs, out_tangents


ad.primitive_jvps[apply_p] = _apply_jvp


# --------------------------------------------------------------------------
# jvp_p: J(x) t, linear in t
# --------------------------------------------------------------------------


def _jvp_jvp(
    args: Sequence[Any],
    tangents: Sequence[Any],
    *,
    call: TesseractCall,
    wrt,
    outs,
    batch,
):
    n = call.n
    if any(_nonzero(t) for t in tangents[:n]):
        raise NotImplementedError(_FORWARD_OVER_FORWARD)
    out = jvp_p.bind(*args, call=call, wrt=wrt, outs=outs, batch=batch)
    dts = tangents[n:]
    nz = [k for k, t in enumerate(dts) if _nonzero(t)]
    if not nz:
        return out, [_zero(o) for o in out]
    t_out = jvp_p.bind(
        *args[:n],
        *(dts[k] for k in nz),
        call=call,
        wrt=tuple(wrt[k] for k in nz),
        outs=outs,
        batch=batch,
    )
    return out, t_out


def _jvp_transpose(
    cts: Sequence[Any], *args: Any, call: TesseractCall, wrt, outs, batch
):
    n = call.n
    primals = args[:n]
    _check_primals_known(primals, "a Tesseract JVP")
    result: list[Any] = [None] * len(args)
    nz = [k for k, c in enumerate(cts) if _nonzero(c)]
    # A used non-differentiable output: its derivative is unknown, so refuse
    # (an unused one, or one behind stop_gradient, has a symbolic-zero cotangent).
    call.check_output_cotangents([outs[k] for k in nz])
    if nz:
        call.require_route(call.batch_route("reverse") if batch else "reverse")
        grads = vjp_p.bind(
            *primals,
            *(cts[k] for k in nz),
            call=call,
            wrt=wrt,
            outs=tuple(outs[k] for k in nz),
            batch=batch,
        )
        for j, g in enumerate(grads):
            if _undefined(args[n + j]):
                result[n + j] = g
    return result


ad.primitive_jvps[jvp_p] = _jvp_jvp
ad.primitive_transposes[jvp_p] = _jvp_transpose


# --------------------------------------------------------------------------
# vjp_p: ct J(x), linear in ct
# --------------------------------------------------------------------------


def _vjp_jvp(
    args: Sequence[Any],
    tangents: Sequence[Any],
    *,
    call: TesseractCall,
    wrt,
    outs,
    batch,
):
    n = call.n
    primals, cts = args[:n], args[n:]
    dx, dct = tangents[:n], tangents[n:]
    tan = _nonzero_paths(call, dx)
    out = vjp_p.bind(*args, call=call, wrt=wrt, outs=outs, batch=batch)
    terms = []
    if tan:
        call.require_route("reverse")
        dxs = [dx[call.index[p]] for p in tan]

        def hvp(*ct: Any) -> list[Any]:
            return hvp_p.bind(
                *primals, *ct, *dxs, call=call, wrt=wrt, outs=outs, tan=tan
            )

        terms.append(jax.vmap(hvp)(*cts) if batch else hvp(*cts))
    nz = [k for k, t in enumerate(dct) if _nonzero(t)]
    if nz:
        terms.append(
            vjp_p.bind(
                *primals,
                *(dct[k] for k in nz),
                call=call,
                wrt=wrt,
                outs=tuple(outs[k] for k in nz),
                batch=batch,
            )
        )
    if not terms:
        return out, [_zero(o) for o in out]
    return out, _sum_terms(terms)


def _vjp_transpose(
    gs: Sequence[Any], *args: Any, call: TesseractCall, wrt, outs, batch
):
    n = call.n
    primals = args[:n]
    _check_primals_known(primals, "a Tesseract VJP")
    result: list[Any] = [None] * len(args)
    nz = [k for k, g in enumerate(gs) if _nonzero(g)]
    if nz:
        call.require_route(call.batch_route("forward") if batch else "forward")
        tans = jvp_p.bind(
            *primals,
            *(gs[k] for k in nz),
            call=call,
            wrt=tuple(wrt[k] for k in nz),
            outs=outs,
            batch=batch,
        )
        for j, t in enumerate(tans):
            if _undefined(args[n + j]):
                result[n + j] = t
    return result


ad.primitive_jvps[vjp_p] = _vjp_jvp
ad.primitive_transposes[vjp_p] = _vjp_transpose


# --------------------------------------------------------------------------
# hvp_p: d/de [ct J(x + e t)], bilinear in (ct, t)
# --------------------------------------------------------------------------


def _hvp_jvp(
    args: Sequence[Any], tangents: Sequence[Any], *, call: TesseractCall, wrt, outs, tan
):
    n, m = call.n, len(outs)
    if any(_nonzero(t) for t in tangents[:n]):
        raise NotImplementedError(_THIRD_ORDER)
    out = hvp_p.bind(*args, call=call, wrt=wrt, outs=outs, tan=tan)
    primals, cts, ts = args[:n], args[n : n + m], args[n + m :]
    dcts, dts = tangents[n : n + m], tangents[n + m :]
    terms = []
    nzc = [k for k, t in enumerate(dcts) if _nonzero(t)]
    if nzc:
        terms.append(
            hvp_p.bind(
                *primals,
                *(dcts[k] for k in nzc),
                *ts,
                call=call,
                wrt=wrt,
                outs=tuple(outs[k] for k in nzc),
                tan=tan,
            )
        )
    nzt = [k for k, t in enumerate(dts) if _nonzero(t)]
    if nzt:
        terms.append(
            hvp_p.bind(
                *primals,
                *cts,
                *(dts[k] for k in nzt),
                call=call,
                wrt=wrt,
                outs=outs,
                tan=tuple(tan[k] for k in nzt),
            )
        )
    if not terms:
        return out, [_zero(o) for o in out]
    return out, _sum_terms(terms)


def _hvp_transpose(gs: Sequence[Any], *args: Any, call: TesseractCall, wrt, outs, tan):
    n, m = call.n, len(outs)
    primals, cts = args[:n], args[n : n + m]
    _check_primals_known(primals, "a Tesseract Hessian-vector product")
    if any(_undefined(c) for c in cts):
        raise NotImplementedError(
            "transposing a Tesseract Hessian-vector product with respect to its "
            "cotangent needs the derivative of a JVP, which no endpoint gives; "
            "use jax.hessian (jacfwd(jacrev(f))) instead"
        )
    result: list[Any] = [None] * len(args)
    nz = [k for k, g in enumerate(gs) if _nonzero(g)]
    if nz:
        # d/dx[ct J] is the Hessian of the scalar ct . f, which is symmetric:
        # its transpose maps a cotangent on `wrt` to one on `tan`.
        swapped = hvp_p.bind(
            *primals,
            *cts,
            *(gs[k] for k in nz),
            call=call,
            wrt=tan,
            outs=outs,
            tan=tuple(wrt[k] for k in nz),
        )
        for j, v in enumerate(swapped):
            if _undefined(args[n + m + j]):
                result[n + m + j] = v
    return result


ad.primitive_jvps[hvp_p] = _hvp_jvp
ad.primitive_transposes[hvp_p] = _hvp_transpose


# --------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------


def _batch(args: Sequence[Any], dims: Sequence[Any], *, prim: Primitive, **params: Any):
    call: TesseractCall = params["call"]
    n = call.n
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    args = [
        a if d is None else jnp.moveaxis(a, d, 0)
        for a, d in zip(args, dims, strict=True)
    ]
    batched = [d is not None for d in dims]
    if size == 0:
        outs = [jnp.zeros((0, *a.shape), a.dtype) for a in _avals(prim, params)]
    elif prim is hvp_p:
        outs = _sequential(prim, args, batched, size, params)
    elif (
        prim in (jvp_p, vjp_p)
        and not any(batched[:n])
        and not (prim is jvp_p and _broadcast_jacfwd(call, params))
    ):
        outs = _at_one_point(prim, args, batched, size, params)
    else:
        plan = _vectorize_plan(prim, call, batched, params)
        if plan is None:
            outs = _looped(prim, args, batched, size, params)
        else:
            outs = _vectorized(prim, args, batched, size, params, plan)
    return outs, [0] * len(outs)


# --------------------------------------------------------------------------
# vmap methods: one call for the whole batch, or one call per element
# --------------------------------------------------------------------------


def _broadcast_jacfwd(call: TesseractCall, params: dict) -> bool:
    """``jacfwd`` under a vectorising method, with no ``jacobian`` call to make instead.

    tesseract-jax then broadcasts the primal to the tangents' batch and makes
    one JVP call; with a ``jacobian`` endpoint (and ``materialize_jacobian``
    not ``False``) the batch at one point is one ``jacobian`` call anyway.
    """
    if call.vmap_method not in VECTORIZING or params["batch"]:
        return False
    uses_jacobian = call.materialize_jacobian is True or (
        call.materialize_jacobian is None and call.endpoints.has_jacobian
    )
    return not uses_jacobian


def _vectorize_plan(
    prim: Primitive, call: TesseractCall, batched: Sequence[bool], params: dict
) -> list[str] | None:
    """How each operand enters one vectorised call (:func:`tess_ad._vmap.plan`), or ``None``."""
    if params.get("batch"):
        return None
    ops = call.operands
    return vmap_plan(
        call.vmap_method,
        _carries(prim, call, batched, params),
        [op.scalar_type is not None for op in ops],
        [op.rank_free for op in ops],
        [op.differentiable for op in ops],
    )


def _carries(
    prim: Primitive, call: TesseractCall, batched: Sequence[bool], params: dict
) -> list[bool]:
    """Which operands carry the batch axis in a batched call of ``prim``.

    The batched ones; for a JVP also those whose tangent is batched (a
    tangent takes its primal's shape); for a VJP every input asked for (vmap
    of a VJP wants per-element gradients, also of an input shared by all).
    """
    n = call.n
    carries = list(batched[:n])
    if prim is jvp_p:
        for p, b in zip(params["wrt"], batched[n:], strict=True):
            carries[call.index[p]] = carries[call.index[p]] or b
    if prim is vjp_p:
        for p in params["wrt"]:
            carries[call.index[p]] = True
    return carries


def _lead(a: Any, how: str, batched: bool, size: int) -> Any:
    """``a`` given a leading axis as the plan says (``batched``: it has one)."""
    if batched or how == "keep":
        return a
    if how == "expand":
        return jnp.expand_dims(a, 0)
    return jnp.broadcast_to(a, (size, *jnp.shape(a)))


def _vectorized(
    prim: Primitive,
    args: Sequence[Any],
    batched: Sequence[bool],
    size: int,
    params: dict,
    plan: Sequence[str],
) -> list[Any]:
    """One call for the whole batch: the Tesseract gets (and returns) the batch axis."""
    call: TesseractCall = params["call"]
    n = call.n
    for op, how in zip(call.operands, plan, strict=True):
        if how != "keep" and op.fixed_rank is not None:
            raise fixed_rank_error(str(call.vmap_method), op.path, op.fixed_rank)
    operands = [
        _lead(a, "broadcast" if how == "batch" else how, b, size)
        for a, b, how in zip(args[:n], batched[:n], plan, strict=True)
    ]
    if prim is jvp_p:  # each tangent takes the shape of its primal
        vectors = [
            _lead(
                t,
                "broadcast" if plan[call.index[p]] == "batch" else plan[call.index[p]],
                b,
                size,
            )
            for p, t, b in zip(params["wrt"], args[n:], batched[n:], strict=True)
        ]
    else:  # cotangents of outputs, which all carry the batch axis
        vectors = [
            _lead(c, "broadcast", b, size)
            for c, b in zip(args[n:], batched[n:], strict=True)
        ]
    vcall = call.vectorized(size, [tuple(jnp.shape(a)) for a in operands])
    return list(prim.bind(*operands, *vectors, **{**params, "call": vcall}))


def _looped(
    prim: Primitive,
    args: Sequence[Any],
    batched: Sequence[bool],
    size: int,
    params: dict,
) -> list[Any]:
    """One call per element, run on the host by one call of a loop ``TesseractCall``.

    The vectors (tangents, cotangents) get the batch axis where their
    operand or output has it; the loop call's host functions slice, call,
    and stack (sum, for the VJP of a shared input).
    """
    if params.get("batch"):  # a batch of rows being vmapped again: bind per element
        return _sequential(prim, args, batched, size, params)
    call: TesseractCall = params["call"]
    n = call.n
    mask = _carries(prim, call, batched, params)
    operands = [
        _lead(a, "broadcast", b, size) if m else a
        for a, b, m in zip(args[:n], batched[:n], mask, strict=True)
    ]
    if prim is jvp_p:
        vectors = [
            _lead(t, "broadcast", b, size) if mask[call.index[p]] else t
            for p, t, b in zip(params["wrt"], args[n:], batched[n:], strict=True)
        ]
    else:  # cotangents of outputs, which all carry the batch axis
        vectors = [
            _lead(c, "broadcast", b, size)
            for c, b in zip(args[n:], batched[n:], strict=True)
        ]
    lcall = call.looped(size, mask)
    return list(prim.bind(*operands, *vectors, **{**params, "call": lcall}))


def _sequential(
    prim: Primitive,
    args: Sequence[Any],
    batched: Sequence[bool],
    size: int,
    params: dict,
) -> list[Any]:
    """One bind per element (a ``jax.lax.map`` under ``jit``)."""
    if under_jit():

        def body(xs: Sequence[Any]) -> list[Any]:
            it = iter(xs)
            return prim.bind(
                *(next(it) if b else a for a, b in zip(args, batched, strict=True)),
                **params,
            )

        return list(
            jax.lax.map(body, [a for a, b in zip(args, batched, strict=True) if b])
        )
    results = [
        prim.bind(
            *(a[i] if b else a for a, b in zip(args, batched, strict=True)), **params
        )
        for i in range(size)
    ]
    return [jnp.stack(column) for column in zip(*results, strict=True)]


def _at_one_point(
    prim: Primitive,
    args: Sequence[Any],
    batched: Sequence[bool],
    size: int,
    params: dict,
) -> list[Any]:
    """A batch of (co)tangents at one point: one ``batch``-mode call.

    The host hands the whole batch to ``Endpoints.jvp_many``/``vjp_many``,
    which chooses one ``jacobian`` call or one call per row, exactly as for
    the PyTorch adapter. A call that is already in batch mode (``vmap`` of
    ``jacrev``) folds the new batch axis into the old one.
    """
    n = params["call"].n
    inner = params["batch"]
    lead = (size, inner) if inner else (size,)
    vecs = []
    for a, b in zip(args[n:], batched[n:], strict=True):
        full = a if b else jnp.broadcast_to(a, (size, *a.shape))
        vecs.append(jnp.reshape(full, (math.prod(lead), *full.shape[len(lead) :])))
    outs = prim.bind(*args[:n], *vecs, **{**params, "batch": math.prod(lead)})
    return [jnp.reshape(o, (*lead, *o.shape[1:])) for o in outs]


for _p in _ALL:
    batching.primitive_batchers[_p] = partial(_batch, prim=_p)
