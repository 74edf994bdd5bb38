"""Array-like values, framework-neutrally: shape, dtype and NumPy conversion.

Leaves arrive as NumPy arrays, nested lists, Python numbers, tesseract-core's
encoded-array dicts, or framework arrays (JAX tracers, torch tensors). The core
never imports a framework, so it reads them by duck typing on ``shape`` and
``dtype`` and converts them only when asked (:func:`as_numpy`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._errors import SchemaError

__all__ = ["array_meta", "as_numpy", "is_encoded_array", "placeholder"]


def is_encoded_array(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("object_type") == "array"


# Framework dtype objects seen so far -> NumPy dtype (a handful per process).
_DTYPES: dict[Any, np.dtype] = {}


def _dtype_of(dtype: Any) -> np.dtype:
    if isinstance(dtype, np.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):  # TypeError: an unhashable dtype-like
        pass
    try:
        found = np.dtype(dtype)
    except TypeError:
        # torch.float32 and similar: the name after the dot is numpy's name.
        found = np.dtype(str(dtype).rsplit(".", 1)[-1])
    try:
        if len(_DTYPES) < 256:
            _DTYPES[dtype] = found
    except TypeError:
        pass
    return found


def array_meta(value: Any) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of an array-like value, or None if it is not one."""
    if isinstance(value, np.ndarray | np.generic):  # the common case, first
        return value.shape, value.dtype
    if is_encoded_array(value):
        return tuple(int(d) for d in value["shape"]), np.dtype(value["dtype"])
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return tuple(map(int, value.shape)), _dtype_of(value.dtype)
    if isinstance(value, bool | int | float | complex):
        arr = np.asarray(value)
        return arr.shape, arr.dtype
    if isinstance(value, list | tuple):
        try:
            arr = np.asarray(value)
        except ValueError:
            return None
        if arr.dtype.kind in "biufc":
            return arr.shape, arr.dtype
    return None


def as_numpy(value: Any, dtype: Any = None) -> np.ndarray:
    """Convert an array leaf to a NumPy array (decoding encoded-array dicts).

    Args:
        value: A NumPy array or scalar, nested list, framework array with
            ``__array__``, or a tesseract-core encoded array (``json`` or
            ``base64`` encoding).
        dtype: Optional dtype to cast to.

    Returns:
        The value as an ``np.ndarray``.
    """
    if type(value) is np.ndarray and (dtype is None or value.dtype == dtype):
        return value
    if is_encoded_array(value):
        data = value["data"]
        enc = data.get("encoding")
        if enc == "json":
            arr = np.asarray(data["buffer"], dtype=value["dtype"])
        elif enc == "base64":
            arr = np.frombuffer(base64.b64decode(data["buffer"]), dtype=value["dtype"])
        else:
            raise SchemaError(
                f"cannot decode an array with encoding {enc!r} here; "
                "pass a NumPy array or a json/base64-encoded array instead"
            )
        return arr.reshape(value["shape"]).astype(dtype or arr.dtype, copy=False)
    return np.asarray(value, dtype=dtype)


def placeholder(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A read-only array of the given shape and dtype that takes no memory.

    Stands in for data that is not there (output shapes announced before a
    call, the operands of a traced call), so a skeleton holds no real array.
    """
    return np.broadcast_to(np.zeros((), np.dtype(dtype)), tuple(shape))
