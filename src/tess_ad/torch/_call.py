"""What one ``apply_tesseract`` call shares with its autograd Functions.

``torch.autograd.Function`` arguments are either tensors (which autograd and
``torch.func`` track) or opaque Python objects (which they pass through
untouched). The adapter hands every tensor leaf of the inputs to the Functions
as a positional tensor argument, and everything else travels in one
:class:`TesseractCall`: the :class:`~tess_ad._endpoints.Endpoints` to call, the
flattened inputs to rebuild the nested tree from, the path of each tensor
argument, and a slot where the forward leaves the outputs that are not tensors
(non-differentiable fields), so that one ``apply`` call serves both kinds of
output.

Every derivative Function (VJP, JVP, second order) receives the same object,
so they all address the Tesseract with the same paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .._endpoints import Endpoints
from .._schema import FlatTree
from ._convert import to_numpy

__all__ = ["TesseractCall"]


class TesseractCall:
    """The non-tensor context of one ``apply_tesseract`` call.

    Attributes:
        endpoints: The Tesseract's gradient routes.
        flat: The flattened user inputs; tensor leaves are replaced on each
            evaluation by the values of the Function's tensor arguments.
        paths: Input path of each tensor argument, in argument order.
        differentiable: Whether the schema marks each tensor argument
            ``Differentiable`` (only those receive gradients or tangents).
        is_array: Whether the schema makes each tensor argument an array
            (``False``: a scalar field such as ``float``, sent as a number).
        device: Device of the caller's tensors; results are returned there.
        out_paths: Paths of the differentiable array outputs, in tree order
            (set by the first forward).
        out_meta: ``path -> (shape, dtype)`` of those outputs, for one sample.
        out_flat: The flattened outputs of the last forward (non-tensor
            outputs are read from here).
        out_static: ``path -> value`` for the non-differentiable outputs;
            under ``vmap`` these are stacked along a leading batch axis.
    """

    __slots__ = (
        "device",
        "differentiable",
        "endpoints",
        "flat",
        "is_array",
        "out_flat",
        "out_meta",
        "out_paths",
        "out_static",
        "paths",
    )

    def __init__(
        self,
        endpoints: Endpoints,
        flat: FlatTree,
        paths: Sequence[str],
        differentiable: Sequence[bool],
        is_array: Sequence[bool],
        device: torch.device,
    ) -> None:
        self.endpoints = endpoints
        self.flat = flat
        self.paths = tuple(paths)
        self.differentiable = tuple(differentiable)
        self.is_array = tuple(is_array)
        self.device = device
        self.out_paths: tuple[str, ...] = ()
        self.out_meta: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.out_flat: FlatTree | None = None
        self.out_static: dict[str, Any] = {}

    @property
    def n_args(self) -> int:
        """Number of tensor arguments (input leaves given as tensors)."""
        return len(self.paths)

    def fork(self) -> TesseractCall:
        """A call with the same inputs context and its own output slot (one vmap sample)."""
        return TesseractCall(
            self.endpoints,
            self.flat,
            self.paths,
            self.differentiable,
            self.is_array,
            self.device,
        )

    # -- inputs ----------------------------------------------------------------

    def inputs(self, tensors: Sequence[torch.Tensor]) -> Any:
        """The nested inputs with the tensor arguments' current values (NumPy)."""
        return self.flat.unflatten(
            {
                path: to_numpy(t, array=arr)
                for path, t, arr in zip(self.paths, tensors, self.is_array, strict=True)
            }
        )

    def cotangents(
        self, out_paths: Sequence[str], tensors: Sequence[torch.Tensor]
    ) -> dict[str, np.ndarray]:
        """``path -> array`` of the cotangents that are not all zero.

        An output whose cotangent is zero contributes nothing to a VJP, so it is
        not requested from the Tesseract at all.
        """
        out = {}
        for path, t in zip(out_paths, tensors, strict=True):
            arr = to_numpy(t)
            if np.any(arr):
                out[path] = arr
        return out

    def tangents(
        self, idx: Sequence[int], tensors: Sequence[torch.Tensor]
    ) -> dict[str, np.ndarray]:
        """``path -> array`` of the input tangents that are not all zero."""
        out = {}
        for i, t in zip(idx, tensors, strict=True):
            arr = to_numpy(t)
            if np.any(arr):
                out[self.paths[i]] = arr
        return out

    # -- outputs ---------------------------------------------------------------

    def record(self, outputs: Mapping[str, Any]) -> FlatTree:
        """Flatten ``apply``'s result and remember its layout and static outputs."""
        flat = self.endpoints.schema.outputs.flatten(outputs, check=False)
        self.out_flat = flat
        self.out_paths = tuple(
            p for p, leaf in flat.items() if leaf.differentiable and leaf.is_array
        )
        self.out_meta = {p: (flat[p].shape, flat[p].dtype) for p in self.out_paths}
        self.out_static = {
            p: _writable(leaf.value)
            for p, leaf in flat.items()
            if p not in self.out_meta
        }
        return flat

    def record_batch(self, samples: Sequence[TesseractCall]) -> None:
        """Combine the outputs of the per-sample calls of a sequential ``vmap``."""
        first = samples[0]
        self.out_flat = first.out_flat
        self.out_paths = first.out_paths
        self.out_meta = first.out_meta
        self.out_static = {
            path: _stack([s.out_static[path] for s in samples])
            for path in first.out_static
        }

    def output_tree(self, tensors: Sequence[torch.Tensor]) -> Any:
        """The nested outputs: tensors for differentiable arrays, the rest as returned."""
        assert self.out_flat is not None, "the forward has not run"
        updates: dict[str, Any] = dict(self.out_static)
        updates.update(zip(self.out_paths, tensors, strict=True))
        return self.out_flat.unflatten(updates)


def _writable(value: Any) -> Any:
    """A writable copy of a read-only array (decoded results often are read-only).

    Users convert non-differentiable outputs with ``torch.as_tensor``, which
    warns on (and cannot safely share) read-only memory.
    """
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        return value.copy()
    return value


def _stack(values: list[Any]) -> Any:
    """Stack one non-differentiable output over the samples of a ``vmap``.

    Numbers and arrays become one NumPy array with a leading batch axis;
    other values (strings, ...) are kept once if all samples agree, else listed.
    """
    if all(isinstance(v, np.ndarray | np.generic | bool | int | float) for v in values):
        try:
            return np.stack([np.asarray(v) for v in values])
        except ValueError:
            return values
    if all(v == values[0] for v in values[1:]):
        return values[0]
    return values
