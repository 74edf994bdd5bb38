"""Conversions between ``torch.Tensor`` and NumPy at the edge of the Tesseract call.

These helpers run only inside the ``forward`` of the adapter's
``torch.autograd.Function`` classes. That is the one place where a tensor is
guaranteed to be a plain, storage-backed tensor: ``torch.func`` transforms
(``grad``, ``vmap``, ``jvp``...) unwrap the arguments of a custom Function
before its ``forward`` runs, while anywhere else a tensor may be a functorch
wrapper that has no data to read.

Results come back as writable tensors that no one else writes to, on the
device the caller's tensors live on: an endpoint's fresh NumPy result is
shared (no copy, as ``torch.as_tensor`` does), and so is the array behind
tesseract-core's read-only view of it; one that may alias the call's inputs
or is read-only after decoding is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["numpy_dtype", "to_numpy", "to_tensor", "torch_dtype"]


def to_numpy(tensor: torch.Tensor, *, array: bool = True) -> Any:
    """A plain tensor as NumPy for the Tesseract (moved to the host).

    Args:
        tensor: A storage-backed tensor (inside an autograd Function's forward).
        array: ``False`` for a leaf the schema types as a scalar (``float``,
            ``int``): a one-element tensor then becomes a Python number.

    Returns:
        An ``np.ndarray`` (its dtype is the tensor's), or a Python scalar.
    """
    value = tensor.detach()
    if value.device.type != "cpu":
        value = value.cpu()
    if not array and value.numel() == 1:
        return value.item()
    if value.is_conj() or value.is_neg():  # lazy views NumPy cannot read
        value = value.resolve_conj().resolve_neg()
    return value.numpy()


def to_tensor(
    value: Any,
    device: torch.device,
    dtype: np.dtype | None = None,
    avoid: Sequence[Any] = (),
) -> torch.Tensor:
    """A Tesseract result (NumPy array or scalar) as a tensor on ``device``.

    The tensor shares the result's memory when that is safe, as
    ``torch.as_tensor`` (and tesseract-torch) would: a writable NumPy array
    that shares no memory with any array of ``avoid`` (the inputs the
    Tesseract was called with: a Tesseract may return an input, or a view of
    one, as an output). Otherwise, and for read-only results (decoded from
    HTTP), it is copied, so the tensor always owns writable memory no one else
    writes to.

    Args:
        value: An array-like result of an endpoint.
        device: Where the caller's tensors live.
        dtype: Cast to this NumPy dtype first, if given.
        avoid: Arrays the result must not share memory with.

    Returns:
        A CPU tensor sharing or owning its memory, or a copy on ``device``.
    """
    arr = np.asarray(value, dtype=dtype)
    if not arr.flags.writeable:
        arr = _exact_writable_base(arr)
    shared = (
        isinstance(value, np.ndarray)
        and arr.flags.writeable
        and arr.flags.c_contiguous
        and not any(
            isinstance(a, np.ndarray) and np.may_share_memory(arr, a) for a in avoid
        )
    )
    if not shared:
        arr = np.array(arr, copy=True, order="C")
    tensor = torch.from_numpy(arr)
    return tensor if device.type == "cpu" else tensor.to(device)


def _exact_writable_base(arr: np.ndarray) -> np.ndarray:
    """The writable array behind a read-only view of all of it, else ``arr``.

    tesseract-core validates every in-process result with ``np.broadcast_to``
    to its schema shape, which returns a read-only view of the Tesseract's own
    array even when the shape already fits. Copying that view (as for truly
    read-only results) cost one full-size copy per output and per gradient;
    the array it views is what a direct call would have returned, so it is
    shared on the same terms (the caller still refuses inputs and repeats).
    Only a view of the whole base with the same layout qualifies: a
    broadcast (a zero stride), a slice or a reinterpretation does not.
    """
    base = arr.base
    if (
        isinstance(base, np.ndarray)
        and base.flags.writeable
        and base.dtype == arr.dtype
        and base.shape == arr.shape
        and base.strides == arr.strides
        and base.ctypes.data == arr.ctypes.data
    ):
        return base
    return arr


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The NumPy dtype of a torch dtype (``torch.float32`` -> ``float32``).

    By name, not through a tensor: this also runs inside ``torch.func``
    transforms, where a freshly created tensor has no storage to read.
    """
    try:
        return _NUMPY_DTYPES[dtype]
    except KeyError:
        found = _NUMPY_DTYPES[dtype] = np.dtype(str(dtype).rsplit(".", 1)[-1])
        return found


# torch dtype -> NumPy dtype, filled on first use (torch has a few dozen dtypes).
_NUMPY_DTYPES: dict[torch.dtype, np.dtype] = {}


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a NumPy dtype (``float32`` -> ``torch.float32``).

    Runs outside the autograd Functions (on the user's inputs), where creating
    a plain tensor to ask torch is safe.
    """
    try:
        return _TORCH_DTYPES[dtype]
    except KeyError:
        found = _TORCH_DTYPES[dtype] = torch.from_numpy(np.empty(0, dtype)).dtype
        return found


# NumPy dtype -> torch dtype, filled on first use.
_TORCH_DTYPES: dict[np.dtype, torch.dtype] = {}
