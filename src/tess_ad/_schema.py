"""The schema-leaf pytree: a Tesseract's nested inputs and outputs as flat leaves.

Everything tess_ad does works on *leaves*: the FD estimators perturb array
leaves, the adapters hand array leaves to JAX and PyTorch and keep the rest
static. This module turns a nested input or output (dicts, lists, nested
models, arrays, scalars, strings) into an ordered ``path -> Leaf`` mapping and
back again, losslessly, with the path syntax of tesseract-core
(``mesh.points``, ``params.{alpha}``, ``layers.[0].w``).

Why read the OpenAPI schema rather than only look at values: a list of floats
may be an array leaf or a list of scalar leaves, and a dict may be a model or a
``dict[str, ...]``; only the schema knows. ``components.schemas.ApplyInputSchema``
also carries ``differentiable_arrays``, the path *patterns* (``params.{}``)
with shape and dtype that say which leaves take part in differentiation.
Where the schema is ambiguous (unions that the value does not settle) the
structure falls back to the value itself.

The JSON schema itself is parsed by ``_jsonschema``; values are inspected by
``_values`` (duck-typed, no framework imports). The parsed schema is cached per client object (:func:`tesseract_schema`), so an
HTTP client fetches ``/openapi.json`` once, however many calls follow. That
fetch is the first contact with a served Tesseract, so a server that cannot be
reached is reported here, as a :class:`TesseractConnectionError` naming its URL
(``with_retries`` raises the same error once its retries are spent).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import (
    Callable,
    ItemsView,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    ValuesView,
)
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._client import transient_errors, url_of
from ._errors import SchemaError, TesseractConnectionError
from ._jsonschema import ANY, ArraySpec, Node, parse_openapi
from ._paths import dict_segment, join_path, list_segment, matches_pattern, split_path
from ._values import array_meta, as_numpy, is_encoded_array, placeholder

__all__ = [
    "ArraySpec",
    "FlatTree",
    "Leaf",
    "SchemaError",
    "TesseractConnectionError",
    "TesseractSchema",
    "TreeSchema",
    "as_numpy",
    "tesseract_schema",
]


# --------------------------------------------------------------------------
# Leaves and flat trees
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """One leaf of a flattened input or output.

    Attributes:
        path: The leaf's path in tesseract-core syntax (``layers.[0].w``).
        value: The value exactly as it was given (never copied or converted).
        differentiable: Whether the schema marks this leaf ``Differentiable``.
        shape: The value's shape for array leaves, ``None`` otherwise.
        dtype: The value's dtype for array leaves, ``None`` otherwise.
        spec: What the schema declares for this leaf (array leaves whose
            schema is known), else ``None``. ``spec.dtype`` is the dtype the
            Tesseract computes in, which may differ from the value's.
    """

    path: str
    value: Any
    differentiable: bool
    shape: tuple[int, ...] | None
    dtype: np.dtype | None
    spec: ArraySpec | None = None

    @property
    def is_array(self) -> bool:
        """Whether the schema makes this leaf an array."""
        return self.shape is not None

    @property
    def declared_dtype(self) -> np.dtype | None:
        """The dtype the schema declares for this array leaf, if it declares one.

        What the Tesseract's validation casts the value to. For a
        ``Differentiable`` leaf it comes from ``differentiable_arrays``; for
        others it is the schema's hint, which may accept several dtypes.
        """
        return None if self.spec is None else self.spec.numpy_dtype

    @property
    def compute_dtype(self) -> np.dtype | None:
        """The dtype the Tesseract computes this leaf in.

        For a ``Differentiable`` leaf, the dtype its schema declares (in
        ``differentiable_arrays``): derivatives are taken, cast and returned
        in it. For any other leaf, the value's own dtype (``None`` for
        non-arrays): the Tesseract's validation casts it as it sees fit. This
        is the one rule every layer uses.
        """
        declared = self.declared_dtype if self.differentiable else None
        return declared if declared is not None else self.dtype


class _Slot:
    """Placeholder for a leaf inside a tree definition."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class FlatTree(Mapping[str, Leaf]):
    """An ordered ``path -> Leaf`` mapping that remembers how to rebuild the tree.

    Obtained from :meth:`TreeSchema.flatten`. Iteration follows the order of
    the original tree (depth first, keys in insertion order).
    """

    __slots__ = ("_leaves", "_tree", "_treedef")

    def __init__(self, leaves: dict[str, Leaf], treedef: Any, tree: Any = None) -> None:
        self._leaves = leaves
        self._treedef = treedef
        self._tree = tree

    def __getitem__(self, path: str) -> Leaf:
        try:
            return self._leaves[path]
        except KeyError:
            raise KeyError(_unknown_path_message(path, self._leaves)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._leaves)

    def __len__(self) -> int:
        return len(self._leaves)

    # The Mapping mixins would go through __getitem__ per key; these are the
    # dict's own views (read-only use: the leaves are never modified in place).
    def __contains__(self, path: object) -> bool:
        return path in self._leaves

    def keys(self) -> KeysView[str]:
        return self._leaves.keys()

    def values(self) -> ValuesView[Leaf]:
        return self._leaves.values()

    def items(self) -> ItemsView[str, Leaf]:
        return self._leaves.items()

    def __repr__(self) -> str:
        return f"FlatTree({list(self._leaves)})"

    @property
    def differentiable_paths(self) -> tuple[str, ...]:
        """Paths of the array leaves marked ``Differentiable``, in tree order."""
        return tuple(p for p, leaf in self._leaves.items() if leaf.differentiable)

    @property
    def array_paths(self) -> tuple[str, ...]:
        """Paths of all array leaves, in tree order."""
        return tuple(p for p, leaf in self._leaves.items() if leaf.is_array)

    def leaf_values(self) -> dict[str, Any]:
        """``path -> value`` for every leaf (``values()`` gives the :class:`Leaf` objects)."""
        return {p: leaf.value for p, leaf in self._leaves.items()}

    def check_paths(self, paths: Sequence[str], what: str = "path") -> None:
        """Raise :class:`SchemaError` naming the first path that is not a leaf here."""
        for path in paths:
            if path not in self._leaves:
                raise SchemaError(
                    f"{what}: " + _unknown_path_message(path, self._leaves)
                )

    @property
    def tree(self) -> Any:
        """The nested tree of these leaves' values (built once, then kept).

        Free when the flatten that made this tree converted its leaves (the
        nested tree was built in the same pass); otherwise one
        :meth:`unflatten`. The result is shared: do not modify it.
        """
        if self._tree is None:
            self._tree = self.unflatten()
        return self._tree

    def replace(self, updates: Mapping[str, Any]) -> FlatTree:
        """The same tree with some leaves' values replaced, without walking it.

        Array leaves take the new value's shape and dtype; nothing is
        checked against the schema (the caller knows the values fit).

        Raises:
            SchemaError: If ``updates`` names a path that is not a leaf.
        """
        self.check_paths(list(updates), "replace")
        leaves = dict(self._leaves)
        for path, value in updates.items():
            leaf = leaves[path]
            meta = array_meta(value) if leaf.is_array else None
            leaves[path] = (
                Leaf(
                    path, value, leaf.differentiable, leaf.shape, leaf.dtype, leaf.spec
                )
                if meta is None
                else Leaf(path, value, leaf.differentiable, *meta, leaf.spec)
            )
        return FlatTree(leaves, self._treedef)

    def unflatten(self, updates: Mapping[str, Any] | None = None) -> Any:
        """Rebuild the nested tree, optionally with some leaves replaced.

        Args:
            updates: ``path -> new value`` for leaves to replace; other leaves
                keep their original values.

        Returns:
            The nested tree (models come back as dicts, tuples as tuples).

        Raises:
            SchemaError: If ``updates`` names a path that is not a leaf.
        """
        updates = updates or {}
        self.check_paths(list(updates), "unflatten")
        return _build(self._treedef, updates, self._leaves)


def _build(node: Any, updates: Mapping[str, Any], leaves: Mapping[str, Leaf]) -> Any:
    """The nested tree of a tree definition, with ``updates`` put in.

    Module-level on purpose: a recursive closure is a reference cycle, which
    kept every rebuilt tree's arrays alive until the garbage collector ran.
    """
    if isinstance(node, _Slot):
        if node.path in updates:
            return updates[node.path]
        return leaves[node.path].value
    if isinstance(node, dict):
        return {k: _build(v, updates, leaves) for k, v in node.items()}
    if isinstance(node, tuple):
        return tuple(_build(v, updates, leaves) for v in node)
    return [_build(v, updates, leaves) for v in node]


def _unknown_path_message(path: str, known: Mapping[str, Any]) -> str:
    names = list(known)
    hint = ", ".join(repr(n) for n in names[:12]) + (" ..." if len(names) > 12 else "")
    return f"no leaf at path {path!r}. Known leaf paths: {hint or '(none)'}"


# --------------------------------------------------------------------------
# One side of a Tesseract: inputs or outputs
# --------------------------------------------------------------------------


class TreeSchema:
    """The schema of one side (inputs or outputs) of a Tesseract's ``apply``.

    Attributes:
        name: ``"inputs"`` or ``"outputs"``, used in error messages.
        differentiable_arrays: Pattern (``params.{}``) to :class:`ArraySpec`,
            as declared in the schema's ``differentiable_arrays``.
    """

    def __init__(
        self,
        name: str,
        root: Node,
        differentiable_arrays: Mapping[str, ArraySpec],
    ) -> None:
        self.name = name
        self._root = root
        self.differentiable_arrays = dict(differentiable_arrays)
        self._patterns = [(split_path(p), p) for p in self.differentiable_arrays]
        # concrete path -> pattern: every call asks again for the same few paths
        self._pattern_of: dict[str, str | None] = {}

    def differentiable_pattern(self, path: str) -> str | None:
        """The ``differentiable_arrays`` pattern a concrete path matches, if any."""
        try:
            return self._pattern_of[path]
        except KeyError:
            pass
        segments = split_path(path)
        found = next(
            (
                name
                for pattern, name in self._patterns
                if matches_pattern(pattern, segments)
            ),
            None,
        )
        if (
            len(self._pattern_of) >= _PATTERN_CACHE_SIZE
        ):  # paths may come from data keys
            self._pattern_of.clear()
        self._pattern_of[path] = found
        return found

    def expand(self, pattern: str, flat: FlatTree) -> list[str]:
        """Concrete leaf paths of ``flat`` that match ``pattern`` (``params.{}``).

        Example:
            >>> schema.inputs.expand("params.{}", flat)  # doctest: +SKIP
            ['params.{alpha}', 'params.{beta}']
        """
        pattern_segments = split_path(pattern)
        return [p for p in flat if matches_pattern(pattern_segments, split_path(p))]

    def flatten(
        self,
        tree: Any,
        *,
        check: bool = True,
        convert: Callable[[Leaf], Any] | None = None,
    ) -> FlatTree:
        """Flatten a nested input or output into leaves.

        Args:
            tree: A dict (or pydantic model) following this schema.
            check: Validate array leaves against the schema (array-like value,
                rank and fixed dimensions). Unknown fields are always refused.
            convert: If given, each leaf's value is replaced by
                ``convert(leaf)`` in the same pass, and the nested tree of the
                converted values is kept (:attr:`FlatTree.tree` then costs
                nothing): one walk both reads and rebuilds the tree.

        Returns:
            The :class:`FlatTree`; ``unflatten()`` gives back an equal tree.

        Raises:
            SchemaError: Naming the path of the first value that does not fit.
        """
        walk = _Walk(self, check, convert)
        treedef, built = walk.node(tree, self._root, ())
        if not isinstance(treedef, dict):
            raise SchemaError(
                f"{self.name} must be a dict of fields, got {type(tree).__name__}"
            )
        return FlatTree(walk.leaves, treedef, built if convert is not None else None)

    def fixed_tree(self) -> Any:
        """A tree of placeholder arrays if the schema fixes every shape, else ``None``.

        Arrays need every dimension fixed and a dtype; models recurse; Python
        numbers and strings become a number or ``""``; a ``dict``, ``list``,
        union or free dimension anywhere means the schema does not settle the
        shapes. Computed once per schema.
        """
        if not hasattr(self, "_fixed"):
            try:
                self._fixed = _fixed_tree(self._root)
            except _NotFixed:
                self._fixed = None
        return self._fixed

    def fixed_rank_arrays(self) -> list[tuple[str, ArraySpec]]:
        """Array leaves whose number of dimensions the schema fixes, with their patterns.

        Patterns use ``{}`` for dict keys and ``[]`` for list items
        (``params.{}``, ``layers.[].w``); every option of a union counts. An
        empty list means every array takes any leading axes
        (``Array[..., dtype]``).
        """
        found: list[tuple[str, ArraySpec]] = []
        seen: set[int] = set()

        def walk(node: Node, segments: tuple[str, ...]) -> None:
            if id(node) in seen:  # a recursive model: its arrays are listed once
                return
            if node.kind == "array":
                if node.spec is not None and node.spec.shape is not None:
                    found.append((join_path(segments) or "(root)", node.spec))
                return
            seen.add(id(node))
            for name, child in node.fields.items():
                walk(child, (*segments, name))
            if node.child is not None:
                walk(node.child, (*segments, "{}" if node.kind == "dict" else "[]"))
            for option in node.options:
                walk(option, segments)
            seen.discard(id(node))

        walk(self._root, ())
        return found

    def _where(self, segments: tuple[str, ...]) -> str:
        return f"{self.name} path {join_path(segments)!r}" if segments else self.name


_PATTERN_CACHE_SIZE = 4096


class _NotFixed(Exception):
    pass


_SCALAR_PLACEHOLDERS = {"number": 0.0, "integer": 0, "boolean": False, "string": ""}


def _fixed_tree(node: Node) -> Any:
    if node.kind == "array":
        spec = node.spec
        if (
            spec is None
            or spec.shape is None
            or None in spec.shape
            or spec.dtype is None
        ):
            raise _NotFixed
        return placeholder(spec.shape, spec.dtype)  # type: ignore[arg-type]
    if node.kind == "model" and node.fields:
        return {key: _fixed_tree(child) for key, child in node.fields.items()}
    if node.kind == "scalar" and node.type_name in _SCALAR_PLACEHOLDERS:
        return _SCALAR_PLACEHOLDERS[node.type_name]
    raise _NotFixed


# Types that are never pydantic models: the walk skips the model test for them.
_PLAIN_TYPES = frozenset(
    {dict, list, tuple, str, int, float, bool, type(None), np.ndarray, np.float64}
)


class _Walk:
    """One flatten: walks a value along the schema's nodes, collecting leaves.

    ``node`` returns ``(treedef, built)``: the tree definition (containers
    with a :class:`_Slot` per leaf) and, when converting, the same tree with
    the converted leaf values (else ``None``).
    """

    def __init__(
        self, schema: TreeSchema, check: bool, convert: Callable[[Leaf], Any] | None
    ) -> None:
        self.schema = schema
        self.check = check
        self.convert = convert
        self.leaves: dict[str, Leaf] = {}

    def _dict(self, items: dict[Any, tuple[Any, Any]]) -> tuple[dict, Any]:
        treedef = {k: d for k, (d, _) in items.items()}
        if self.convert is None:  # nobody asked for the rebuilt tree: do not build it
            return treedef, None
        return treedef, {k: b for k, (_, b) in items.items()}

    def _sequence(self, items: list[tuple[Any, Any]], kind: type) -> tuple[Any, Any]:
        treedef = kind([d for d, _ in items])
        if self.convert is None:
            return treedef, None
        return treedef, kind([b for _, b in items])

    def _add(self, leaf: Leaf) -> tuple[_Slot, Any]:
        if self.convert is not None:
            value = self.convert(leaf)
            if value is not leaf.value:
                meta = array_meta(value) if leaf.is_array else None
                leaf = Leaf(
                    leaf.path,
                    value,
                    leaf.differentiable,
                    leaf.shape,
                    meta[1] if meta is not None else leaf.dtype,
                    leaf.spec,
                )
        self.leaves[leaf.path] = leaf
        return _Slot(leaf.path), leaf.value

    def node(self, value: Any, node: Node, segments: tuple[str, ...]) -> Any:
        schema, check = self.schema, self.check
        if node.kind == "union":
            node = _pick_option(node.options, value)
        if node.kind == "scalar" and node.type_name == "null" and value is None:
            # An Optional field left at None: no array this time, nothing to
            # differentiate (a None for a non-Optional array is still refused).
            return self._add(Leaf(join_path(segments), value, False, None, None))
        # Ask the class: reading ``model_fields`` off an instance is deprecated.
        if (
            type(value) not in _PLAIN_TYPES
            and not isinstance(value, type)
            and hasattr(type(value), "model_fields")
        ):
            value = {k: getattr(value, k) for k in type(value).model_fields}

        if node.kind == "array":
            return self.array(value, node.spec, segments)
        if node.kind == "model" and isinstance(value, Mapping):
            items = {}
            for key, item in value.items():
                child = node.fields.get(key)
                if child is None:
                    if node.closed:
                        known = ", ".join(node.fields)
                        unknown = join_path((*segments, str(key)))
                        raise SchemaError(
                            f"unknown field {unknown!r} in {schema._where(segments)}; "
                            f"the schema allows: {known}. Remove it or fix its name."
                        )
                    child = ANY
                items[key] = self.node(item, child, (*segments, key))
            if check:
                missing = [
                    join_path((*segments, k))
                    for k in node.fields
                    if k in node.required and k not in value
                ]
                if missing:
                    raise SchemaError(
                        f"missing required field(s) {', '.join(map(repr, missing))} "
                        f"in {schema._where(segments)}"
                    )
            return self._dict(items)
        if node.kind == "dict" and isinstance(value, Mapping):
            child = node.child or ANY
            return self._dict(
                {
                    key: self.node(item, child, (*segments, dict_segment(str(key))))
                    for key, item in value.items()
                }
            )
        if node.kind == "list" and isinstance(value, list | tuple):
            child = node.child or ANY
            return self._sequence(
                [
                    self.node(item, child, (*segments, list_segment(i)))
                    for i, item in enumerate(value)
                ],
                tuple if isinstance(value, tuple) else list,
            )
        if node.kind == "any":
            return self.untyped(value, segments)
        if check and node.kind in ("model", "dict", "list"):
            expected = {"model": "a dict of fields", "dict": "a dict", "list": "a list"}
            raise SchemaError(
                f"expected {expected[node.kind]} at {schema._where(segments)}, "
                f"got {type(value).__name__}"
            )
        return self.scalar(value, segments)

    def untyped(self, value: Any, segments: tuple[str, ...]) -> Any:
        """Structure from the value alone (schema said nothing precise)."""
        if isinstance(value, Mapping) and not is_encoded_array(value):
            return self._dict(
                {
                    k: self.untyped(v, (*segments, dict_segment(str(k))))
                    for k, v in value.items()
                }
            )
        if isinstance(value, list | tuple) and array_meta(value) is None:
            return self._sequence(
                [
                    self.untyped(v, (*segments, list_segment(i)))
                    for i, v in enumerate(value)
                ],
                tuple if isinstance(value, tuple) else list,
            )
        if (hasattr(value, "shape") and hasattr(value, "dtype")) or is_encoded_array(
            value
        ):
            return self.array(value, None, segments)
        return self.scalar(value, segments)

    def scalar(self, value: Any, segments: tuple[str, ...]) -> Any:
        path = join_path(segments)
        if self.schema.differentiable_pattern(path) is not None:
            raise SchemaError(
                f"{self.schema._where(segments)} is a Differentiable array, got "
                f"{type(value).__name__} {value!r:.60}; pass an array of numbers"
            )
        return self._add(Leaf(path, value, False, None, None))

    def array(
        self, value: Any, spec: ArraySpec | None, segments: tuple[str, ...]
    ) -> Any:
        schema, check = self.schema, self.check
        path = join_path(segments)
        pattern = schema.differentiable_pattern(path)
        if pattern is not None:
            spec = schema.differentiable_arrays[pattern]
        differentiable = pattern is not None
        if differentiable and "{}" in segments:
            raise SchemaError(
                f"{schema._where(segments)}: a differentiable leaf under an empty dict key "
                "cannot be named by a tesseract-core path ('{}' is the wildcard); "
                "give the key a name"
            )
        meta = array_meta(value)
        if meta is None:
            if value is None and not differentiable and not check:
                return self._add(Leaf(path, value, False, None, None))
            what = spec.describe() if spec else "an array"
            raise SchemaError(
                f"{schema._where(segments)} expects {what}, got "
                f"{type(value).__name__} {value!r:.60}; pass an array of numbers"
            )
        shape, dtype = meta
        if check and spec is not None and spec.shape is not None:
            _check_shape(shape, spec, schema, segments)
        if check and spec is not None:
            _check_dtype_kind(dtype, spec, schema, segments)
        return self._add(Leaf(path, value, differentiable, shape, dtype, spec))


def _check_shape(
    shape: tuple[int, ...],
    spec: ArraySpec,
    schema: TreeSchema,
    segments: tuple[str, ...],
) -> None:
    expected = spec.shape
    assert expected is not None
    ok = len(shape) == len(expected)
    if ok:
        for s, e in zip(shape, expected, strict=True):
            if not (e is None or s == e or (s == 1 and not spec.differentiable)):
                ok = False
                break
    if not ok:
        dims = ["any" if e is None else str(e) for e in expected]
        shown = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        raise SchemaError(
            f"{schema._where(segments)} has shape {shape}. Expected shape: {shown} "
            f"({spec.describe()}); reshape the value to match"
        )


def _check_dtype_kind(
    dtype: np.dtype, spec: ArraySpec, schema: TreeSchema, segments: tuple[str, ...]
) -> None:
    """Refuse values that no cast turns into the declared dtype without loss.

    Integers for a float array are cast as usual; strings, objects, dates and
    complex numbers for a real array are not numbers of that kind at all, and
    would otherwise fail (or drop the imaginary part) deep inside a cast that
    cannot say which leaf it was.
    """
    expected = spec.numpy_dtype
    if expected is None or expected.kind not in "biufc":
        return
    allowed = "biufc" if expected.kind == "c" else "biuf"
    if dtype.kind not in allowed:
        raise SchemaError(
            f"{schema._where(segments)} has dtype {np.dtype(dtype)}, but the schema expects "
            f"{spec.describe()}; pass an array of {'complex ' if expected.kind == 'c' else 'real '}numbers"
        )


def _pick_option(options: list[Node], value: Any) -> Node:
    """Choose the union branch that fits ``value`` (Optional[...] and friends)."""
    if value is None:
        for opt in options:
            if opt.kind == "scalar" and opt.type_name == "null":
                return opt
    candidates = [
        o for o in options if not (o.kind == "scalar" and o.type_name == "null")
    ]
    if len(candidates) == 1:
        return candidates[0]
    if isinstance(value, list | tuple):
        # Decided from the first element, without converting the list: a list
        # of tracers or of tensors that require grad cannot become a NumPy array
        # (and a list of arrays of one shape would pass for a stacked array).
        # Numbers (nested lists of them) are an array given as a list, or a
        # list of numbers; anything else (arrays, dicts...) a list of items.
        first: Any = value
        while isinstance(first, list | tuple) and first:
            first = first[0]
        numeric = isinstance(first, list | tuple | bool | int | float | complex)
        numeric = numeric or isinstance(first, np.generic)
        for kind in ("array", "list") if numeric else ("list", "array"):
            for opt in candidates:
                if opt.kind == kind:
                    return opt
        return ANY
    is_array = array_meta(value) is not None and not isinstance(value, Mapping | str)
    for opt in candidates:
        if opt.kind == "array" and is_array:
            return opt
        if opt.kind in ("model", "dict") and isinstance(value, Mapping):
            return opt
        if opt.kind == "list" and isinstance(value, list | tuple) and not is_array:
            return opt
    return ANY


# --------------------------------------------------------------------------
# A whole Tesseract, cached per client
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TesseractSchema:
    """Both sides of a Tesseract's ``apply`` and its endpoints.

    Attributes:
        inputs: Schema of the inputs.
        outputs: Schema of the outputs.
        endpoints: Names of the endpoints the Tesseract serves.
    """

    inputs: TreeSchema
    outputs: TreeSchema
    endpoints: frozenset[str]

    def has(self, endpoint: str) -> bool:
        """Whether the Tesseract serves ``endpoint``."""
        return endpoint in self.endpoints

    @classmethod
    def from_openapi(cls, openapi: Mapping[str, Any]) -> TesseractSchema:
        """Parse a Tesseract's OpenAPI document."""
        try:
            parts = parse_openapi(openapi)
        except ValueError as exc:
            raise SchemaError(str(exc)) from None
        return cls(
            TreeSchema("inputs", parts.inputs, parts.input_specs),
            TreeSchema("outputs", parts.outputs, parts.output_specs),
            parts.endpoints,
        )

    def with_endpoints(self, extra: Sequence[str]) -> TesseractSchema:
        """The same schema, serving ``extra`` endpoints as well."""
        return TesseractSchema(
            self.inputs, self.outputs, self.endpoints | frozenset(extra)
        )


_CACHE_LOCK = threading.Lock()
_CACHE: weakref.WeakKeyDictionary[Any, TesseractSchema] = weakref.WeakKeyDictionary()
_REQUIRED_METHODS = ("apply", "openapi_schema")


def tesseract_schema(tesseract: Any) -> TesseractSchema:
    """The parsed schema of a Tesseract client, read once per client object.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` (in-process or served), a
            ``tess_ad.with_finite_differences`` proxy, or any object with an
            ``openapi_schema`` attribute and an ``apply`` method.

    Returns:
        The :class:`TesseractSchema`.

    Raises:
        TypeError: If ``tesseract`` lacks ``apply`` or ``openapi_schema``.

    Example:
        >>> from tesseract_core import Tesseract
        >>> t = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
        >>> schema = tesseract_schema(t)
        >>> schema.inputs.differentiable_arrays["x"].shape
        (None,)
    """
    own = getattr(tesseract, "tess_ad_schema", None)
    if isinstance(own, TesseractSchema):
        return own
    try:
        with _CACHE_LOCK:
            cached = _CACHE.get(tesseract)
    except TypeError:  # not weak-referenceable: parse every time
        cached = None
    if cached is not None:
        return cached
    missing = [
        m
        for m in _REQUIRED_METHODS
        if not hasattr(type(tesseract), m) and not hasattr(tesseract, m)
    ]
    if missing:
        raise TypeError(
            f"expected a Tesseract client (tesseract_core.Tesseract), got "
            f"{type(tesseract).__name__}, which lacks {', '.join(missing)}. "
            "Create one with Tesseract.from_tesseract_api(...) or Tesseract.from_url(...)."
        )
    schema = TesseractSchema.from_openapi(_fetch_openapi(tesseract))
    try:
        with _CACHE_LOCK:
            _CACHE[tesseract] = schema
    except TypeError:
        pass
    return schema


def _fetch_openapi(tesseract: Any) -> Any:
    """``tesseract.openapi_schema``; an unreachable server is named by its URL."""
    try:
        return tesseract.openapi_schema
    except TesseractConnectionError:
        raise
    except transient_errors() as exc:
        url = url_of(tesseract)
        raise TesseractConnectionError(
            f"cannot reach the Tesseract at {url or '(unknown URL)'}: reading its "
            f"OpenAPI schema failed ({type(exc).__name__}: {exc}). Is its server "
            "running at that address? To wait for a server that is starting or "
            "restarting, wrap the client: tess_ad.with_retries(Tesseract.from_url(url)).",
            "openapi_schema",
            url,
            1,
        ) from exc
