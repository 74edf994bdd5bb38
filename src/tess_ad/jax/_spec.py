"""Output specs: the shapes, dtypes and structure a Tesseract call returns.

A JAX primitive must announce its output shapes before it runs (``jit``,
``vmap`` bodies, the tangents of ``linearize``), but a Tesseract only knows
them once it has run. :class:`OutputSpec` is that announcement, found in a
fixed order of sources (the first that answers wins):

1. the Tesseract's ``abstract_eval`` endpoint;
2. an ``OutputSchema`` whose every output has a fixed shape (no free
   dimension, no ``dict``/``list`` of unknown length);
3. a record of an earlier *concrete* call with inputs of the same shapes,
   dtypes and static values (every eager call records one, so a Tesseract
   without ``abstract_eval`` can be jitted after one eager call);

and otherwise :class:`OutputShapeError` says which of these to add. The
records live in a small per-client table (weakly keyed, so clients are not
kept alive), shared by every ``apply_tesseract`` call on that client.

A spec keeps a *skeleton* of the output tree (placeholders instead of data)
from which the nested output is rebuilt, so no output array and no tracer
outlives the call that made it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tess_ad._jsonschema import abstract_to_placeholders
from tess_ad._schema import FlatTree, TesseractSchema
from tess_ad._values import placeholder

from ._compat import canonical_dtype

__all__ = [
    "InputKey",
    "OutLeaf",
    "OutputShapeError",
    "OutputSpec",
    "fixed_schema_spec",
    "lookup_record",
    "spec_from_abstract",
    "spec_from_flat",
    "store_record",
]


class OutputShapeError(ValueError):
    """The output shapes of a traced Tesseract call cannot be determined.

    Raised by :func:`tess_ad.jax.apply_tesseract` under ``jit`` (and other
    transformations that need shapes before the call runs) when the Tesseract
    has no ``abstract_eval`` endpoint, its OutputSchema does not fix every
    shape, and no earlier eager call recorded them; the message says which
    of these to add.
    """


# --------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class OutLeaf:
    """One output leaf as JAX sees it.

    Attributes:
        path: Leaf path (``summary.{mean}``).
        kind: ``"array"`` (schema array), ``"number"`` (a Python int, float
            or bool field: a 0-d array under transformations) or ``"other"``
            (strings and the like: only eager calls return them).
        shape: Shape (``()`` for numbers and others).
        dtype: JAX dtype (canonical), ``None`` for ``"other"``.
        differentiable: Whether the schema marks the output ``Differentiable``.
    """

    path: str
    kind: Literal["array", "number", "other"]
    shape: tuple[int, ...]
    dtype: np.dtype | None
    differentiable: bool

    def describe(self) -> str:
        """``float64[3]``-style description for error messages."""
        if self.dtype is None:
            return self.kind
        return f"{self.dtype.name}{list(self.shape)}"


@dataclass(frozen=True, eq=False)
class OutputSpec:
    """Everything JAX needs to know about a call's outputs before it runs.

    Attributes:
        leaves: Every output leaf in tree order.
        skeleton: Placeholder-valued flat output tree to rebuild the nesting.
        source: Where the spec came from, for error messages.
    """

    leaves: tuple[OutLeaf, ...]
    skeleton: FlatTree
    source: str

    @property
    def traced(self) -> tuple[OutLeaf, ...]:
        """Leaves that are JAX values (arrays and numbers), in tree order."""
        return tuple(leaf for leaf in self.leaves if leaf.kind != "other")

    @property
    def differentiable_paths(self) -> tuple[str, ...]:
        """Paths of the differentiable outputs."""
        return tuple(leaf.path for leaf in self.leaves if leaf.differentiable)

    @property
    def tangent_paths(self) -> tuple[str, ...]:
        """Paths of the outputs that get a tangent from ``jvp_p``, in tree order.

        The differentiable outputs, and the floating-point outputs the schema
        does not mark ``Differentiable``: their derivative exists but is
        unknown, so their tangent is NaN and a cotangent on them is refused
        (see ``_primitives``). Integer and boolean outputs are left out: JAX
        gives every integer value a zero (``float0``) tangent.
        """
        return tuple(
            leaf.path
            for leaf in self.traced
            if leaf.differentiable
            or (leaf.dtype is not None and np.issubdtype(leaf.dtype, np.inexact))
        )

    def leaf(self, path: str) -> OutLeaf:
        """The leaf at ``path``."""
        for leaf in self.leaves:
            if leaf.path == path:
                return leaf
        raise KeyError(path)

    def same_as(self, other: OutputSpec) -> bool:
        """Whether two specs announce the same leaves."""
        return self.leaves == other.leaves

    def unflatten(self, values: Mapping[str, Any]) -> Any:
        """The nested output with ``values`` at their paths (``None`` elsewhere)."""
        return self.skeleton.unflatten(
            {leaf.path: values.get(leaf.path) for leaf in self.leaves}
        )

    def describe(self) -> str:
        """``{path: float64[3], ...}`` for error messages."""
        return (
            "{" + ", ".join(f"{lf.path}: {lf.describe()}" for lf in self.traced) + "}"
        )

    def without_batch(self, source: str) -> OutputSpec:
        """The spec of one element of a batched call (the inverse of :meth:`with_batch`)."""
        leaves = tuple(
            leaf
            if leaf.kind == "other"
            else OutLeaf(
                leaf.path, "array", leaf.shape[1:], leaf.dtype, leaf.differentiable
            )
            for leaf in self.leaves
        )
        fill = {
            leaf.path: placeholder(leaf.shape, leaf.dtype)
            for leaf in leaves
            if leaf.kind != "other"
        }
        return OutputSpec(leaves, self.skeleton.replace(fill), source)

    def with_batch(self, size: int, source: str) -> OutputSpec:
        """The spec of ``size`` such calls stacked: a leading axis on every JAX value."""
        leaves = tuple(
            leaf
            if leaf.kind == "other"
            else OutLeaf(
                leaf.path, "array", (size, *leaf.shape), leaf.dtype, leaf.differentiable
            )
            for leaf in self.leaves
        )
        fill = {
            leaf.path: placeholder(leaf.shape, leaf.dtype)
            for leaf in leaves
            if leaf.kind != "other"
        }
        return OutputSpec(leaves, self.skeleton.replace(fill), source)


def spec_from_flat(flat: FlatTree, source: str) -> OutputSpec:
    """The spec of flattened outputs (concrete, or placeholder-valued).

    Args:
        flat: The outputs as ``apply`` returned them, flattened with the
            OutputSchema (or a tree of placeholders).
        source: Where the outputs came from.

    Returns:
        The spec; its skeleton holds placeholders, not the outputs' data.
    """
    leaves = []
    fill: dict[str, Any] = {}
    for path, leaf in flat.items():
        if leaf.shape is not None:  # an array leaf (Leaf.is_array)
            out = OutLeaf(
                path,
                "array",
                tuple(leaf.shape),
                canonical_dtype(leaf.compute_dtype),
                leaf.differentiable,
            )
            fill[path] = placeholder(out.shape, out.dtype)
        elif isinstance(leaf.value, bool | int | float | np.bool_ | np.number):
            out = OutLeaf(
                path, "number", (), canonical_dtype(np.asarray(leaf.value).dtype), False
            )
            fill[path] = leaf.value
        else:
            out = OutLeaf(path, "other", (), None, False)
            fill[path] = None
        leaves.append(out)
    return OutputSpec(tuple(leaves), flat.replace(fill), source)


def spec_from_abstract(schema: TesseractSchema, abstract_outputs: Any) -> OutputSpec:
    """The spec from an ``abstract_eval`` result (``{"shape", "dtype"}`` leaves)."""
    tree = abstract_to_placeholders(abstract_outputs, placeholder)
    return spec_from_flat(
        schema.outputs.flatten(tree, check=False), "the abstract_eval endpoint"
    )


# --------------------------------------------------------------------------
# Source 2: a fully fixed OutputSchema
# --------------------------------------------------------------------------

_FIXED_LOCK = threading.Lock()
_FIXED: weakref.WeakKeyDictionary[TesseractSchema, OutputSpec | None] = (
    weakref.WeakKeyDictionary()
)


def fixed_schema_spec(schema: TesseractSchema) -> OutputSpec | None:
    """The spec an ``OutputSchema`` with only fixed shapes implies, else ``None``.

    Cached per schema (:meth:`tess_ad.TreeSchema.fixed_tree` says which
    schemas fix every shape).
    """
    with _FIXED_LOCK:
        if schema in _FIXED:
            return _FIXED[schema]
    tree = schema.outputs.fixed_tree()
    spec = (
        None
        if tree is None
        else spec_from_flat(
            schema.outputs.flatten(tree, check=False),
            "the fixed shapes of the OutputSchema",
        )
    )
    with _FIXED_LOCK:
        _FIXED[schema] = spec
    return spec


# --------------------------------------------------------------------------
# Source 3: records of earlier concrete calls
# --------------------------------------------------------------------------

# One entry per input leaf: ("a", path, shape, dtype) for arrays, ("v", path,
# value) for static scalars, ("t", path) for scalars that are traced (value
# unknown: it matches any recorded value).
InputKey = tuple[tuple[Hashable, ...], ...]

_RECORD_LOCK = threading.Lock()
_RECORDS: weakref.WeakKeyDictionary[Any, dict[InputKey, OutputSpec]] = (
    weakref.WeakKeyDictionary()
)
_MAX_RECORDS = 256


def store_record(tesseract: Any, key: InputKey, spec: OutputSpec) -> None:
    """Remember the spec of a concrete call (bounded, oldest dropped first)."""
    try:
        with _RECORD_LOCK:
            table = _RECORDS.setdefault(tesseract, {})
            table.pop(key, None)
            table[key] = spec
            while len(table) > _MAX_RECORDS:
                table.pop(next(iter(table)))
    except TypeError:  # client not weak-referenceable: nothing recorded
        pass


def lookup_record(tesseract: Any, key: InputKey) -> OutputSpec | None:
    """The recorded spec for inputs like ``key`` (traced scalars match any value)."""
    try:
        with _RECORD_LOCK:
            table = dict(_RECORDS.get(tesseract, {}))
    except TypeError:
        return None
    if key in table:
        return table[key]
    for recorded, spec in reversed(table.items()):
        if len(recorded) == len(key) and all(
            _entry_matches(a, b) for a, b in zip(key, recorded, strict=True)
        ):
            return spec
    return None


def _entry_matches(
    wanted: tuple[Hashable, ...], recorded: tuple[Hashable, ...]
) -> bool:
    if wanted == recorded:
        return True
    return wanted[0] == "t" and recorded[0] in ("v", "t") and wanted[1] == recorded[1]
