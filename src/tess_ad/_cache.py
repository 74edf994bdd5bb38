"""On-disk cache of finished evaluations, so a long sweep that dies resumes where it stopped.

One ``.npz`` file per evaluated point, named by a hash of the Tesseract's
schema and of the full input tree (every leaf: path, dtype, shape and bytes,
or the JSON of a non-array value). Files hold only arrays and strings and are
read with ``allow_pickle=False``: the cache never unpickles anything. Each file
carries a SHA-256 checksum of its contents; a truncated or corrupted file is
detected, reported with a :class:`CacheCorruptionWarning`, deleted and
recomputed, never loaded. Writes go to a temporary file first and are renamed
into place, so a process killed mid-write leaves no half file behind.

The key covers the inputs and the schema, not the simulator's code: a changed
simulator behind the same schema needs a new cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._schema import FlatTree, Leaf, as_numpy

__all__ = ["CacheCorruptionWarning", "EvaluationCache"]

_FORMAT = "tess_ad-cache-v2"


class CacheCorruptionWarning(UserWarning):
    """A cache file failed its checksum or could not be read; it is recomputed."""


def _digest_arrays(paths: list[str], arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256(_FORMAT.encode())
    for path, arr in zip(paths, arrays, strict=True):
        arr = np.ascontiguousarray(arr)
        h.update(path.encode())
        h.update(str(arr.dtype).encode())
        h.update(repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _leaf_digest(leaf: Leaf, value: Any) -> bytes:
    """Digest of one leaf's value: dtype, shape and bytes of arrays (in the schema's dtype), JSON of the rest."""
    if leaf.is_array:
        arr = np.ascontiguousarray(as_numpy(value, leaf.declared_dtype))
        return hashlib.sha256(
            f"{arr.dtype}{arr.shape}".encode() + arr.tobytes()
        ).digest()
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, default=repr).encode()
    ).digest()


class EvaluationCache:
    """A directory of finished evaluations.

    Args:
        directory: Where to keep the files (created if missing).
        namespace: A string identifying the Tesseract (its schema); part of every key.

    Raises:
        OSError: If the directory cannot be created or written to, with the
            path and what to do.
    """

    def __init__(self, directory: str | os.PathLike, namespace: str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-"):
                pass
        except OSError as exc:
            raise OSError(
                f"cache directory {str(self.directory)!r} is not writable ({exc.strerror or exc}); "
                "pass a writable directory as cache=..., or cache=None to disable caching"
            ) from None
        self._namespace = hashlib.sha256(namespace.encode()).hexdigest()[:16]
        self._memo: tuple[FlatTree, dict[str, bytes]] | None = None

    def key(self, inputs: FlatTree, updates: Mapping[str, Any] | None = None) -> str:
        """Hash of the whole input tree ``inputs`` with the leaves in ``updates`` replaced.

        Every leaf counts, not only the perturbed ones, so equal trees give
        equal keys whichever leaves a plan perturbed. The digests of the
        unchanged leaves are computed once per tree and reused for every point
        of a sweep: a point costs only the hashing of the leaves it changes.
        """
        if self._memo is None or self._memo[0] is not inputs:
            self._memo = (
                inputs,
                {p: _leaf_digest(leaf, leaf.value) for p, leaf in inputs.items()},
            )
        base = self._memo[1]
        updates = updates or {}
        h = hashlib.sha256(self._namespace.encode())
        for path, leaf in inputs.items():
            h.update(path.encode() + b"\0")
            h.update(
                _leaf_digest(leaf, updates[path]) if path in updates else base[path]
            )
        return h.hexdigest()

    def _file(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The cached outputs for ``key``, or ``None`` (missing or corrupted)."""
        file = self._file(key)
        if not file.exists():
            return None
        try:
            with open(file, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                paths = [str(p) for p in data["paths"]]
                arrays = [data[f"a{i}"] for i in range(len(paths))]
                checksum = str(data["checksum"])
            if checksum != _digest_arrays(paths, arrays):
                raise ValueError("checksum mismatch")
        except Exception as exc:
            warnings.warn(
                f"tess_ad cache file {str(file)!r} is corrupted ({exc}); recomputing it",
                CacheCorruptionWarning,
                stacklevel=2,
            )
            file.unlink(missing_ok=True)
            return None
        return dict(zip(paths, arrays, strict=True))

    def put(self, key: str, outputs: Mapping[str, Any]) -> None:
        """Store the outputs of one evaluation (atomically)."""
        paths = list(outputs)
        arrays = [np.asarray(outputs[p]) for p in paths]
        # Any, not ndarray: mypy would match the values against savez's
        # allow_pickle keyword too, which the keys a0, a1, ... never are.
        payload: dict[str, Any] = {f"a{i}": a for i, a in enumerate(arrays)}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    paths=np.array(paths, dtype=str),
                    checksum=np.array(_digest_arrays(paths, arrays)),
                    **payload,
                )
            os.replace(tmp, self._file(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*.npz"))
