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

from collections.abc import Sequence
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
        sent: The NumPy inputs of the forward's ``apply`` (set by it).
        out: The flattened outputs of the forward (set by it): the one record
            of the call's outputs (``out_paths``, the differentiable array
            leaves, is read off it once). The differentiable array leaves are the
            Function's tensor outputs; under ``vmap`` the other leaves hold
            values stacked along a leading batch axis.
    """

    __slots__ = (
        "device",
        "differentiable",
        "endpoints",
        "flat",
        "is_array",
        "out",
        "out_paths",
        "paths",
        "sent",
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
        self.out: FlatTree | None = None
        self.out_paths: tuple[str, ...] = ()
        self.sent: FlatTree | None = None

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

    def inputs(self, tensors: Sequence[torch.Tensor]) -> FlatTree:
        """The flat inputs with the tensor arguments' current values (NumPy), no walk."""
        return self.flat.replace(
            {
                path: to_numpy(t, array=arr)
                for path, t, arr in zip(self.paths, tensors, self.is_array, strict=True)
            }
        )

    def vectors(
        self, paths: Sequence[str], tensors: Sequence[torch.Tensor]
    ) -> dict[str, np.ndarray]:
        """``path -> array`` of cotangents or tangents (zeros are dropped by Endpoints)."""
        return {p: to_numpy(t) for p, t in zip(paths, tensors, strict=True)}

    # -- outputs ---------------------------------------------------------------

    def record(self, out: FlatTree, sent: FlatTree | None = None) -> FlatTree:
        """Keep the flattened outputs of the forward (and their differentiable paths).

        ``sent``: the NumPy inputs the forward's ``apply`` was called with; a
        backward at the same point sends them (and their nested tree, already
        built) again instead of converting the tensors a second time.
        """
        self.out = out
        self.sent = sent
        self.out_paths = tuple(
            p for p, leaf in out.items() if leaf.differentiable and leaf.is_array
        )
        return out

    def out_shape(self, path: str) -> tuple[int, ...]:
        """Shape of one sample's output ``path``."""
        assert self.out is not None, "the forward has not run"
        return self.out[path].shape or ()

    def out_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one sample's every differentiable array output.

        What a VJP needs to ask a Tesseract for all of them (with zero
        cotangents) when it cannot answer a partial request.
        """
        return {p: self.out_shape(p) for p in self.out_paths}

    def out_dtype(self, path: str) -> np.dtype | None:
        """Dtype of output ``path`` as the Tesseract returned it (``None`` if not an array)."""
        assert self.out is not None, "the forward has not run"
        return self.out[path].dtype

    def record_batch(self, samples: Sequence[TesseractCall]) -> None:
        """Combine the outputs of the per-sample calls of a sequential ``vmap``."""
        first = samples[0].out
        assert first is not None
        tensors = set(samples[0].out_paths)
        self.out_paths = samples[0].out_paths
        self.out = first.replace(
            {
                path: _stack([s.out[path].value for s in samples])  # type: ignore[index]
                for path in first
                if path not in tensors
            }
        )

    def output_tree(self, tensors: Sequence[torch.Tensor]) -> Any:
        """The nested outputs: tensors for differentiable arrays, the rest as returned."""
        assert self.out is not None, "the forward has not run"
        updates: dict[str, Any] = dict(zip(self.out_paths, tensors, strict=True))
        for path, leaf in self.out.items():
            if path not in updates:
                updates[path] = _writable(leaf.value)
        return self.out.unflatten(updates)


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
