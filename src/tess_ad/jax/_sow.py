"""``sow`` and ``save_intermediates``: see what flows through a chain of Tesseract calls.

The interface is tesseract-jax's: ``sow(value, name)`` is the identity, and
``save_intermediates(fn)`` returns ``fn``'s result with a dictionary of every
sown value, ``{name: {"primal": ..., "tangent": ..., "cotangent": ...}}``
(tangents under ``jax.jvp``, cotangents under ``jax.grad``/``jax.vjp``).

How: ``sow`` binds a primitive, ``sow_p``, that is the identity everywhere
but reports its operands (to :mod:`tess_ad._intermediates`) when it runs:
its eager implementation reports directly, its lowering adds a
``jax.debug.callback`` that reports when the compiled program runs. Its JVP
rule binds it again on the tangents (mode ``"tangent"``), and its transpose
rule on the cotangents (mode ``"cotangent"``), so reverse mode reports the
cotangent that really reaches the value. tesseract-jax instead rewrites the
traced program to return the values as extra outputs; reporting from where
the values are computed needs no private JAX program surgery and works
through ``jit``, ``vmap``, loops and caches of compiled functions alike.

Use the value ``sow`` returns: a result nobody uses is dropped by ``jit``,
and with it its report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from tess_ad._intermediates import call_site, report, saving

from ._compat import Primitive, ad, batching, lower_fun, mlir

__all__ = ["save_intermediates", "sow"]

T = TypeVar("T")

sow_p = Primitive("tess_ad_sow")
sow_p.multiple_results = True


def sow(value: T, name: str, *, tag: str = "intermediates") -> T:
    """Tag ``value`` (any pytree of arrays) for :func:`save_intermediates`; returns it.

    Args:
        value: The value to tag.
        name: Its key in the dictionary ``save_intermediates`` returns; one
            ``sow`` call per name (a ``sow`` reached several times, in a loop
            or ``lax.scan``, stacks its values along a new leading axis).
        tag: Only a ``save_intermediates`` with the same tag collects it.

    Returns:
        ``value`` unchanged. Use it: ``jit`` drops an unused result, and its
        report with it.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from tess_ad.jax import save_intermediates, sow
        >>> def f(x):
        ...     y = sow(jnp.sin(x), "y")
        ...     return (2.0 * y).sum()
        >>> grad, seen = save_intermediates(jax.grad(f))(jnp.zeros(2))
        >>> sorted(seen["y"]), seen["y"]["cotangent"].tolist()
        (['cotangent', 'primal'], [2.0, 2.0])
    """
    leaves, treedef = jax.tree.flatten(value)
    if not leaves:
        return value
    out = sow_p.bind(
        *leaves,
        name=name,
        tag=tag,
        mode="primal",
        site=call_site(),
        treedef=treedef,
    )
    return jax.tree.unflatten(treedef, out)


def save_intermediates(
    fn: Callable[..., Any], *, tag: str = "intermediates"
) -> Callable[..., tuple[Any, dict[str, dict[str, Any]]]]:
    """``fn`` that also returns the values :func:`sow` saw while it ran.

    Put it outermost: ``save_intermediates(jax.grad(f))`` collects the primal
    and cotangent of every ``sow`` in ``f``, ``save_intermediates(jax.jit(f))``
    the primals as the compiled program computes them.

    Args:
        fn: The function to run.
        tag: Collect only the ``sow`` calls with this tag.

    Returns:
        A function with ``fn``'s arguments returning ``(fn's result,
        {name: {"primal" | "tangent" | "cotangent": value}})``.

    Raises:
        ValueError: (when called) If two ``sow`` calls used the same name.
    """
    return saving(fn, tag, _stack, _settle)


def _settle(result: Any) -> None:
    jax.block_until_ready(result)
    jax.effects_barrier()  # the reports of compiled programs are in


def _stack(values: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *values)


# --------------------------------------------------------------------------
# The primitive
# --------------------------------------------------------------------------


def _report(
    *leaves: Any, name: str, tag: str, mode: str, site: Any, treedef: Any
) -> None:
    arrays = [jnp.asarray(leaf) for leaf in leaves]
    report(site, name, tag, mode, jax.tree.unflatten(treedef, arrays))


def _impl(*args: Any, **params: Any) -> Sequence[Any]:
    _report(*args, **params)
    return args


def _abstract_eval(*avals: Any, **params: Any) -> Sequence[Any]:
    return avals


def _lowered(*args: Any, **params: Any) -> Sequence[Any]:
    jax.debug.callback(partial(_report, **params), *args)
    return args


def _jvp(primals: Sequence[Any], tangents: Sequence[Any], **params: Any) -> Any:
    out = sow_p.bind(*primals, **params)
    tangents = [
        jnp.zeros_like(p) if type(t) is ad.Zero else t
        for p, t in zip(primals, tangents, strict=True)
    ]
    return out, sow_p.bind(*tangents, **{**params, "mode": "tangent"})


def _transpose(cts: Sequence[Any], *args: Any, **params: Any) -> Sequence[Any]:
    cts = [
        jnp.zeros(a.aval.shape, a.aval.dtype) if type(c) is ad.Zero else c
        for c, a in zip(cts, args, strict=True)
    ]
    return sow_p.bind(*cts, **{**params, "mode": "cotangent"})


def _batch(args: Sequence[Any], dims: Sequence[Any], **params: Any) -> Any:
    return sow_p.bind(*args, **params), dims


sow_p.def_impl(_impl)
sow_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(sow_p, lower_fun(_lowered, multiple_results=True))
ad.primitive_jvps[sow_p] = _jvp
ad.primitive_transposes[sow_p] = _transpose
batching.primitive_batchers[sow_p] = _batch
