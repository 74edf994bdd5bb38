"""Conversions between ``torch.Tensor`` and NumPy at the edge of the Tesseract call.

These helpers run only inside the ``forward`` of the adapter's
``torch.autograd.Function`` classes. That is the one place where a tensor is
guaranteed to be a plain, storage-backed tensor: ``torch.func`` transforms
(``grad``, ``vmap``, ``jvp``...) unwrap the arguments of a custom Function
before its ``forward`` runs, while anywhere else a tensor may be a functorch
wrapper that has no data to read.

Results always come back as fresh, writable tensors (a NumPy array returned by
an in-process Tesseract may alias one of its inputs, or be read-only after
decoding), on the device the caller's tensors live on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["numpy_dtype", "to_numpy", "to_tensor"]


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
    return value.resolve_conj().resolve_neg().numpy()


def to_tensor(
    value: Any, device: torch.device, dtype: np.dtype | None = None
) -> torch.Tensor:
    """A Tesseract result (NumPy array or scalar) as a new tensor on ``device``.

    Args:
        value: An array-like result of an endpoint.
        device: Where the caller's tensors live.
        dtype: Cast to this NumPy dtype first, if given.

    Returns:
        A tensor that owns its memory.
    """
    arr = np.array(value, dtype=dtype, copy=True, order="C")
    tensor = torch.from_numpy(arr)
    return tensor if device.type == "cpu" else tensor.to(device)


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The NumPy dtype of a torch dtype (``torch.float32`` -> ``float32``).

    By name, not through a tensor: this also runs inside ``torch.func``
    transforms, where a freshly created tensor has no storage to read.
    """
    return np.dtype(str(dtype).rsplit(".", 1)[-1])
