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

Under ``torch.func.vmap`` a call makes a derived call for the batch
(:meth:`TesseractCall.vectorized`: one Tesseract call whose inputs carry the
batch axis, or :meth:`TesseractCall.looped`: one call per element through
:class:`tess_ad._vmap.LoopedEndpoints`), and the Functions run on it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._endpoints import Endpoints
from .._schema import FlatTree
from .._vmap import LoopedEndpoints, fixed_rank_error
from .._vmap import plan as vmap_plan
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
        rank_free: Whether the schema takes any number of dimensions for each
            tensor argument (so a batch axis fits).
        fixed_rank: The schema's type of each tensor argument whose number of
            dimensions it fixes (``None`` for the others).
        vmap_method: How ``torch.func.vmap`` calls the Tesseract
            (:mod:`tess_ad._vmap`).
        vmap_workers: Calls at once when ``vmap`` makes one call per element.
        batch_of: For a call made by ``vmap``: the call it batches and the
            batch size (its outputs carry a leading batch axis).
        expanded: For a vectorised call: which tensor arguments got a leading
            axis of 1 (not the batch); their gradients are asked per element
            and summed.
        sent: The NumPy inputs of the forward's ``apply`` (set by it).
        out: The flattened outputs of the forward (set by it): the one record
            of the call's outputs (``out_paths``, the differentiable array
            leaves, is read off it once). The differentiable array leaves are the
            Function's tensor outputs; under ``vmap`` the other leaves hold
            values stacked along a leading batch axis.
    """

    __slots__ = (
        "batch_of",
        "device",
        "differentiable",
        "endpoints",
        "expanded",
        "fixed_rank",
        "flat",
        "is_array",
        "out",
        "out_paths",
        "paths",
        "rank_free",
        "sent",
        "vmap_method",
        "vmap_workers",
    )

    def __init__(
        self,
        endpoints: Endpoints,
        flat: FlatTree,
        paths: Sequence[str],
        differentiable: Sequence[bool],
        is_array: Sequence[bool],
        device: torch.device,
        rank_free: Sequence[bool] | None = None,
        fixed_rank: Sequence[str | None] | None = None,
        vmap_method: str | None = None,
        vmap_workers: int | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.flat = flat
        self.paths = tuple(paths)
        self.differentiable = tuple(differentiable)
        self.is_array = tuple(is_array)
        self.device = device
        n = len(self.paths)
        self.rank_free = tuple(rank_free) if rank_free is not None else (False,) * n
        self.fixed_rank = tuple(fixed_rank) if fixed_rank is not None else (None,) * n
        self.vmap_method = vmap_method
        self.vmap_workers = vmap_workers
        self.batch_of: tuple[TesseractCall, int] | None = None
        self.expanded: tuple[bool, ...] = (False,) * n
        self.out: FlatTree | None = None
        self.out_paths: tuple[str, ...] = ()
        self.sent: FlatTree | None = None

    @property
    def n_args(self) -> int:
        """Number of tensor arguments (input leaves given as tensors)."""
        return len(self.paths)

    # -- calls made by vmap ----------------------------------------------------------

    def plan(self, carries: Sequence[bool]) -> list[str] | None:
        """How each tensor argument enters one call for a batch (:func:`tess_ad._vmap.plan`).

        ``None``: one call per element. Raises the schema's refusal up front
        when the plan would give a batch axis to an input of fixed rank.
        """
        steps = vmap_plan(
            self.vmap_method,
            carries,
            [not a for a in self.is_array],
            self.rank_free,
            self.differentiable,
        )
        if steps is not None:
            for path, how, fixed in zip(
                self.paths, steps, self.fixed_rank, strict=True
            ):
                if how != "keep" and fixed is not None:
                    raise fixed_rank_error(str(self.vmap_method), path, fixed)
        return steps

    def vectorized(self, size: int, expanded: Sequence[bool]) -> TesseractCall:
        """This call for a whole batch in one Tesseract call (arguments carry the axis).

        ``expanded``: the arguments given a leading axis of 1 rather than the batch.
        """
        call = self._derived(self.endpoints, size)
        call.expanded = tuple(expanded)
        return call

    def looped(self, size: int, mask: Sequence[bool]) -> TesseractCall:
        """This call over a batch, one Tesseract call per element.

        The arguments flagged in ``mask`` carry a leading batch axis; the
        others are shared by every element (their gradients are summed).
        """
        batched = [p for p, m in zip(self.paths, mask, strict=True) if m]
        looped = LoopedEndpoints(self.endpoints, size, batched, self.vmap_workers)
        return self._derived(looped, size)  # type: ignore[arg-type]

    def _derived(self, endpoints: Endpoints, size: int) -> TesseractCall:
        call = TesseractCall(
            endpoints,
            self.flat,
            self.paths,
            self.differentiable,
            self.is_array,
            self.device,
            self.rank_free,
            self.fixed_rank,
            self.vmap_method,
            self.vmap_workers,
        )
        call.batch_of = (self, size)
        call.out_paths = self.out_paths
        return call

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
        """Shape of output ``path`` (with the batch axis, for a call made by ``vmap``)."""
        if self.out is None and self.batch_of is not None:
            parent, size = self.batch_of
            return (size, *parent.out_shape(path))
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
        if self.out is None and self.batch_of is not None:
            return self.batch_of[0].out_dtype(path)
        assert self.out is not None, "the forward has not run"
        return self.out[path].dtype

    def record_batch(self, batch: TesseractCall) -> None:
        """Take the outputs of the call that ran this call's ``vmap`` batch.

        The other outputs keep the batch axis (the nested outputs show it);
        the tensor outputs are recorded as one element (a view), so that this
        call's shapes stay those of one element, as its derivative rules
        (which ``vmap`` batches again) expect.
        """
        assert batch.out is not None, "the batch's forward has not run"
        self.out_paths = batch.out_paths
        self.out = batch.out.replace(
            {p: np.asarray(batch.out[p].value)[0] for p in batch.out_paths}
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
