"""Every private or unstable PyTorch symbol the adapter uses, in one place.

The adapter's autograd Functions take a shortcut when nothing will record
their derivative rules (see :func:`plain_backward`); to know that, they read
two pieces of PyTorch state that have no public accessor. Each is looked up
here once, with what it is for. If a PyTorch release moves one, the shortcut
is switched off with a warning (everything stays correct, a backward costs one
more ``autograd.Function`` call); it is never wrong silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["forward_ad_level", "plain_backward"]


def _lookup() -> tuple[Callable[[], bool], Callable[[], int]] | None:
    # ``torch._C._are_functorch_transforms_active``: the test that
    # ``torch.autograd.Function.apply`` itself makes to route a call through
    # ``torch.func``'s machinery (vmap, grad, jvp, ``is_grads_batched``).
    functorch_active = getattr(torch._C, "_are_functorch_transforms_active", None)
    # ``torch.autograd.forward_ad._current_level``: -1 unless a ``dual_level``
    # is open, i.e. unless forward-mode AD could be tracking the backward.
    forward_ad = getattr(torch.autograd, "forward_ad", None)
    level = getattr(forward_ad, "_current_level", None)
    if not callable(functorch_active) or not isinstance(level, int):
        warnings.warn(
            f"tess_ad.torch: PyTorch {torch.__version__} has no "
            "torch._C._are_functorch_transforms_active or "
            "torch.autograd.forward_ad._current_level; every backward now goes "
            "through one more autograd.Function (correct, about 50 us slower). "
            "Please report it to tess_ad.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return functorch_active, lambda: forward_ad._current_level  # type: ignore[union-attr]


_STATE = _lookup()


def plain_backward() -> bool:
    """Whether a ``backward`` being run now can compute its result directly.

    True when nothing will differentiate or transform what the backward
    computes: no ``create_graph`` (grad mode is off inside a backward unless it
    was asked for), no ``torch.func`` transform, no forward-mode ``dual_level``.
    The backward may then call the Tesseract on NumPy itself instead of through
    another ``autograd.Function``, whose only job would be to record rules that
    nobody reads.
    """
    if _STATE is None or torch.is_grad_enabled():
        return False
    functorch_active, level = _STATE
    return not functorch_active() and level() < 0


def forward_ad_level() -> int:
    """The innermost open ``forward_ad.dual_level`` (-1: none; 0 if unknown)."""
    if _STATE is None:
        return 0  # unknown: callers then ask forward_ad itself, which is always right
    return _STATE[1]()
