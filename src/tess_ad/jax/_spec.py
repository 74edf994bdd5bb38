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
from jax import dtypes as jax_dtypes

from tess_ad._schema import FlatTree, TesseractSchema

__all__ = [
    "InputKey",
    "OutLeaf",
    "OutputShapeError",
    "OutputSpec",
    "canonical_dtype",
    "fixed_schema_spec",
    "lookup_record",
    "placeholder",
    "spec_from_abstract",
    "spec_from_outputs",
    "store_record",
]


class OutputShapeError(ValueError):
    """The output shapes of a traced Tesseract call cannot be determined."""


def canonical_dtype(dtype: Any) -> np.dtype:
    """The dtype JAX uses for ``dtype`` (float64 becomes float32 without x64)."""
    return np.dtype(jax_dtypes.canonicalize_dtype(np.dtype(dtype)))


def placeholder(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A read-only array of the given shape and dtype that takes no memory."""
    return np.broadcast_to(np.zeros((), dtype), tuple(shape))


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


def spec_from_outputs(schema: TesseractSchema, outputs: Any, source: str) -> OutputSpec:
    """The spec of a concrete (or placeholder-valued) output tree.

    Args:
        schema: The Tesseract's schema.
        outputs: Nested outputs as ``apply`` returns them, or a tree of
            :func:`placeholder` arrays.
        source: Where the outputs came from.

    Returns:
        The spec; its skeleton holds placeholders, not the outputs' data.
    """
    flat = schema.outputs.flatten(outputs, check=False)
    leaves = []
    fill: dict[str, Any] = {}
    for path, leaf in flat.items():
        if leaf.is_array:
            dtype = leaf.dtype
            if leaf.differentiable and leaf.spec is not None and leaf.spec.dtype:
                dtype = np.dtype(leaf.spec.dtype)
            out = OutLeaf(
                path,
                "array",
                tuple(leaf.shape),
                canonical_dtype(dtype),
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
    skeleton = schema.outputs.flatten(flat.unflatten(fill), check=False)
    return OutputSpec(tuple(leaves), skeleton, source)


def spec_from_abstract(schema: TesseractSchema, abstract_outputs: Any) -> OutputSpec:
    """The spec from an ``abstract_eval`` result (``{"shape", "dtype"}`` leaves)."""

    def convert(node: Any) -> Any:
        if isinstance(node, Mapping):
            if set(node) == {"shape", "dtype"}:
                return placeholder(tuple(node["shape"]), np.dtype(node["dtype"]))
            return {k: convert(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return type(node)(convert(v) for v in node)
        if (
            hasattr(node, "shape")
            and hasattr(node, "dtype")
            and not hasattr(node, "__array__")
        ):
            return placeholder(tuple(node.shape), np.dtype(str(node.dtype)))
        return node

    return spec_from_outputs(
        schema, convert(abstract_outputs), "the abstract_eval endpoint"
    )


# --------------------------------------------------------------------------
# Source 2: a fully fixed OutputSchema
# --------------------------------------------------------------------------

_FIXED_LOCK = threading.Lock()
_FIXED: weakref.WeakKeyDictionary[Any, OutputSpec | None] = weakref.WeakKeyDictionary()


def fixed_schema_spec(tesseract: Any, schema: TesseractSchema) -> OutputSpec | None:
    """The spec an ``OutputSchema`` with only fixed shapes implies, else ``None``.

    Cached per client. Arrays need every dimension fixed; models recurse;
    Python numbers become numbers and strings "other"; a ``dict``, ``list``,
    union or free dimension anywhere means the schema does not settle it.
    """
    try:
        with _FIXED_LOCK:
            if tesseract in _FIXED:
                return _FIXED[tesseract]
    except TypeError:
        pass
    try:
        components = tesseract.openapi_schema["components"]["schemas"]
        root = components["ApplyOutputSchema"]
        tree = _fixed_tree(root, components, depth=0)
    except (KeyError, TypeError, AttributeError):
        tree = None
    spec = (
        None
        if tree is None
        else spec_from_outputs(schema, tree, "the fixed shapes of the OutputSchema")
    )
    try:
        with _FIXED_LOCK:
            _FIXED[tesseract] = spec
    except TypeError:
        pass
    return spec


class _NotFixed(Exception):
    pass


_SCALAR_PLACEHOLDERS = {"number": 0.0, "integer": 0, "boolean": False, "string": ""}


def _fixed_tree(
    node: Mapping[str, Any], components: Mapping[str, Any], depth: int
) -> Any:
    try:
        return _fixed(node, components, depth)
    except _NotFixed:
        return None


def _fixed(node: Mapping[str, Any], components: Mapping[str, Any], depth: int) -> Any:
    if depth > 50:
        raise _NotFixed
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return _fixed(components[name], components, depth + 1)
    if "allOf" in node and len(node["allOf"]) == 1:
        return _fixed(node["allOf"][0], components, depth + 1)
    props = node.get("properties", {})
    if props.get("object_type", {}).get("const") == "array":
        shape_schema = props.get("shape", {})
        if (
            "maxItems" not in shape_schema
            or shape_schema.get("minItems") != shape_schema["maxItems"]
        ):
            raise _NotFixed
        dims = []
        for item in shape_schema.get("prefixItems", []):
            if "enum" not in item:
                raise _NotFixed
            dims.append(max(item["enum"]))
        if len(dims) != shape_schema["maxItems"]:
            raise _NotFixed
        dtype_schema = props.get("dtype", {})
        enum = dtype_schema.get("enum", [])
        dtype = (
            enum[0] if len(enum) == 1 else (dtype_schema.get("examples") or [None])[0]
        )
        if dtype is None:
            raise _NotFixed
        return placeholder(tuple(dims), np.dtype(dtype))
    if props and node.get("type", "object") == "object":
        return {
            key: _fixed(child, components, depth + 1) for key, child in props.items()
        }
    typ = node.get("type")
    if isinstance(typ, str) and typ in _SCALAR_PLACEHOLDERS:
        return _SCALAR_PLACEHOLDERS[typ]
    raise _NotFixed


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
