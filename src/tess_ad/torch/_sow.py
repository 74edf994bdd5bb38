"""``sow`` and ``save_intermediates`` for PyTorch: what tesseract-jax offers JAX users.

Same interface and result as :mod:`tess_ad.jax` (``{name: {"primal",
"tangent", "cotangent"}}``), reported to the same collector
(:mod:`tess_ad._intermediates`). PyTorch runs eagerly, so ``sow`` reports
the primal when it is called, the forward-mode tangent when the value is a
dual tensor (``torch.autograd.forward_ad``), and the cotangent from a hook on
the returned tensor that fires when autograd passes the gradient back. The
hook sits on a view made for the purpose, not on the caller's tensor, so it
lives and dies with this graph (a hook on a parameter would fire, and pile
up, on every later backward).

Put the backward inside the function you wrap, e.g.
``save_intermediates(lambda x: torch.autograd.grad(loss(x), x))``: the
cotangents are reported while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.autograd.forward_ad as fwAD

from .._intermediates import call_site, report, saving
from ._compat import forward_ad_level

__all__ = ["save_intermediates", "sow"]

T = TypeVar("T")


def sow(value: T, name: str, *, tag: str = "intermediates") -> T:
    """Tag ``value`` (a tensor, or dicts/lists/tuples of them) for :func:`save_intermediates`.

    Args:
        value: The value to tag.
        name: Its key in the dictionary ``save_intermediates`` returns; one
            ``sow`` call per name (a ``sow`` reached again, in a loop, stacks
            its values along a new leading axis).
        tag: Only a ``save_intermediates`` with the same tag collects it.

    Returns:
        ``value``, with the tensors that require grad replaced by views of
        themselves that report their gradient: use the returned value
        downstream, or the cotangent is not seen.

    Example:
        >>> import torch
        >>> from tess_ad.torch import save_intermediates, sow
        >>> def grad_of(x):
        ...     y = sow(torch.sin(x), "y")
        ...     return torch.autograd.grad((2.0 * y).sum(), x)
        >>> _, seen = save_intermediates(grad_of)(torch.zeros(2, requires_grad=True))
        >>> sorted(seen["y"]), seen["y"]["cotangent"].tolist()
        (['cotangent', 'primal'], [2.0, 2.0])
    """
    site = call_site()
    tensors: list[torch.Tensor] = []
    _collect(value, tensors)
    if not tensors:
        return value
    report(site, name, tag, "primal", _map(value, lambda t: _primal(t).detach()))
    tangents = [_tangent(t) for t in tensors]
    if any(t is not None for t in tangents):
        it = iter(tangents)
        report(
            site,
            name,
            tag,
            "tangent",
            _map(value, lambda t: _or_zeros(next(it), t)),
        )
    if not any(t.requires_grad for t in tensors):
        return value
    cotangents = _Cotangents(site, name, tag, value, len(tensors))
    counter = iter(range(len(tensors)))

    def hooked(t: torch.Tensor) -> torch.Tensor:
        k = next(counter)
        if not t.requires_grad:
            cotangents.fill(k, torch.zeros_like(_primal(t).detach()))
            return t
        view = t.view_as(t)
        view.register_hook(lambda g, k=k: cotangents.fill(k, g.detach()))
        return view

    return _map(value, hooked)


def save_intermediates(
    fn: Callable[..., Any], *, tag: str = "intermediates"
) -> Callable[..., tuple[Any, dict[str, dict[str, Any]]]]:
    """``fn`` that also returns the values :func:`sow` saw while it ran.

    Args:
        fn: The function to run (including its backward, for cotangents).
        tag: Collect only the ``sow`` calls with this tag.

    Returns:
        A function with ``fn``'s arguments returning ``(fn's result,
        {name: {"primal" | "tangent" | "cotangent": value}})``.

    Raises:
        ValueError: (when called) If two ``sow`` calls used the same name.
    """
    return saving(fn, tag, _stack)


class _Cotangents:
    """Gathers the gradients of one sown value's tensors; reports once all arrived."""

    def __init__(self, site: Any, name: str, tag: str, value: Any, n: int) -> None:
        self.site, self.name, self.tag, self.value = site, name, tag, value
        self.slots: list[torch.Tensor | None] = [None] * n

    def fill(self, k: int, grad: torch.Tensor) -> None:
        self.slots[k] = grad
        if all(s is not None for s in self.slots):
            it = iter(self.slots)
            report(
                self.site,
                self.name,
                self.tag,
                "cotangent",
                _map(self.value, lambda _: next(it)),
            )
            self.slots = [None] * len(self.slots)


def _collect(value: Any, out: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, out)


def _map(value: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``value`` with ``fn`` applied to each tensor, in :func:`_collect`'s order."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_map(v, fn) for v in value)
    return value


def _primal(t: torch.Tensor) -> torch.Tensor:
    return fwAD.unpack_dual(t).primal if _forward_ad_active() else t


def _tangent(t: torch.Tensor) -> torch.Tensor | None:
    return fwAD.unpack_dual(t).tangent if _forward_ad_active() else None


def _or_zeros(tangent: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    return (
        tangent.detach()
        if tangent is not None
        else torch.zeros_like(_primal(t).detach())
    )


def _forward_ad_active() -> bool:
    return forward_ad_level() >= 0


def _stack(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, dict):
        return {k: _stack([v[k] for v in values]) for k in first}
    return type(first)(_stack([v[i] for v in values]) for i in range(len(first)))
