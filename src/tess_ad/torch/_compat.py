"""Every private or unstable PyTorch symbol the adapter uses, in one place.

The adapter's autograd Functions take a shortcut when nothing will record
their derivative rules (see :func:`plain_backward`); to know that, they read
two pieces of PyTorch state that have no public accessor. If a PyTorch release
moves one, the shortcut is switched off with a warning (everything stays
correct, a backward costs one more ``autograd.Function`` call); it is never
wrong silently.

``torch.autograd.grad(..., is_grads_batched=True)``,
``torch.autograd.functional.jacobian(..., vectorize=True)`` and
``gradcheck(..., check_batched_grad=True)`` batch the backward with PyTorch's
*legacy* vmap (``torch._vmap_internals``), not ``torch.func.vmap``: the
backward rules then receive "legacy batched" tensors, which
``autograd.Function`` does not route to a ``vmap`` rule and which have no data
to hand to NumPy. The Functions detect them and apply their own ``vmap`` rule
to the plain tensors underneath (:func:`legacy_unbatch`,
:func:`legacy_rebatch`). Without these symbols, those three calls fail as
they would without the adapter's help (PyTorch's "Batching rule not
implemented" error); nothing else changes.

Each symbol is looked up here once, with what it is for.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "any_legacy_batched",
    "forward_ad_level",
    "is_legacy_batched",
    "legacy_rebatch",
    "legacy_unbatch",
    "plain_backward",
]


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


# ``torch._C._functorch.is_legacy_batchedtensor``: whether a tensor is a batched
# tensor of the legacy vmap (``torch._vmap_internals._vmap``).
_IS_LEGACY = getattr(
    getattr(torch._C, "_functorch", None), "is_legacy_batchedtensor", None
)
# ``torch._remove_batch_dim(t, level, size, dim)`` / ``torch._add_batch_dim(t, dim,
# level)``: what the legacy vmap itself uses to unwrap and wrap its tensors.
_REMOVE_BATCH_DIM = getattr(torch, "_remove_batch_dim", None)
_ADD_BATCH_DIM = getattr(torch, "_add_batch_dim", None)
_LEGACY_OK = (
    callable(_IS_LEGACY) and callable(_REMOVE_BATCH_DIM) and callable(_ADD_BATCH_DIM)
)
# Legacy vmap levels are nesting depths (1 for the outermost vmap); deeper
# nesting than this is not something PyTorch itself produces.
_MAX_LEGACY_LEVEL = 64


def is_legacy_batched(value: object) -> bool:
    """Whether ``value`` is a tensor batched by PyTorch's legacy vmap."""
    return (
        _LEGACY_OK and isinstance(value, torch.Tensor) and bool(_IS_LEGACY(value))  # type: ignore[misc]
    )


def any_legacy_batched(values: Sequence[object]) -> bool:
    """Whether any of ``values`` is a legacy batched tensor (checked on every apply)."""
    if not _LEGACY_OK:
        return False
    test = _IS_LEGACY
    tensor = torch.Tensor
    for value in values:  # noqa: SIM110 - a loop: any() over a generator is 2x slower
        if isinstance(value, tensor) and test(value):  # type: ignore[misc]
            return True
    return False


def legacy_unbatch(tensor: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The level and plain tensor (batch axis first) of a legacy batched tensor.

    The level is not exposed to Python (and the vmap's own nesting counter is
    per thread, while a backward may run on another one), so it is found by
    asking each level in turn: removing a level the tensor is not batched at
    only broadcasts it, and the tensor stays batched.

    Raises:
        NotImplementedError: If the tensor is batched at several levels
            (nested legacy vmaps).
    """
    assert _REMOVE_BATCH_DIM is not None and _IS_LEGACY is not None
    for level in range(1, _MAX_LEGACY_LEVEL + 1):
        plain = _REMOVE_BATCH_DIM(tensor, level, 1, 0)
        if not _IS_LEGACY(plain):
            return level, plain
    raise NotImplementedError(
        "tess_ad.torch: a Tesseract call received a tensor batched by nested "
        "legacy vmaps (e.g. is_grads_batched=True inside another "
        "is_grads_batched or vectorize=True). One level of batching is "
        "supported; loop over the outer one, or use torch.func.vmap."
    )


def legacy_rebatch(tensor: torch.Tensor, dim: int, level: int) -> torch.Tensor:
    """``tensor`` as a legacy batched tensor at ``level``, batched along ``dim``."""
    assert _ADD_BATCH_DIM is not None
    return _ADD_BATCH_DIM(tensor, dim, level)
