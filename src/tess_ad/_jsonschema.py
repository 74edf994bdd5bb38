"""A Tesseract's OpenAPI (JSON) schema, parsed into a small tree of nodes.

This is the one module that knows tesseract-core's wire format: where the
``apply`` schemas sit (``components.schemas.ApplyInputSchema``), how an array
is spelled (``object_type: array`` with ``shape``/``dtype`` sub-schemas, a
fixed dimension ``N`` as ``enum [1, N]``), ``differentiable_arrays`` and
``array_flags``, and the ``{"shape", "dtype"}`` leaves of an
``abstract_eval`` answer.

The schema-leaf pytree (``_schema``) walks values along this tree: a node says
whether a value is a model (fixed fields), a ``dict[str, ...]``, a list, an
array leaf (with its :class:`ArraySpec`), a scalar, or a union. Parsing is
separate from walking so that it happens once per client, with ``$ref``
targets parsed once and shared (recursive models work), and so that the
walker reads as the few cases it handles.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ANY",
    "ArraySpec",
    "Node",
    "OpenAPIParts",
    "Parser",
    "abstract_to_placeholders",
    "parse_openapi",
    "specs_of",
]


@dataclass(frozen=True)
class ArraySpec:
    """What the schema says of an array leaf.

    Attributes:
        shape: Expected shape, ``None`` per free dimension; ``None`` for any rank.
        dtype: Expected dtype name (``"float64"``), or ``None`` if unknown.
        differentiable: Whether the leaf is marked ``Differentiable``.
    """

    shape: tuple[int | None, ...] | None
    dtype: str | None
    differentiable: bool

    @property
    def numpy_dtype(self) -> np.dtype | None:
        """``dtype`` as a NumPy dtype (``None`` if unknown or not a NumPy name)."""
        return _numpy_dtype(self.dtype)

    def describe(self) -> str:
        """Human-readable form, as written in a Tesseract's schema."""
        shape = "..." if self.shape is None else str(self.shape)
        inner = f"Array[{shape}, {self.dtype}]"
        return f"Differentiable[{inner}]" if self.differentiable else inner


@dataclass
class Node:
    kind: str  # "model" | "dict" | "list" | "array" | "scalar" | "union" | "any"
    fields: dict[str, Node] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    closed: bool = False  # model refuses unknown fields
    child: Node | None = None  # dict values, list items
    spec: ArraySpec | None = None
    options: list[Node] = field(default_factory=list)
    type_name: str = ""


ANY = Node("any")


@functools.lru_cache(maxsize=64)
def _numpy_dtype(name: str | None) -> np.dtype | None:
    if not name:
        return None
    try:
        return np.dtype(name)
    except TypeError:
        return None


class Parser:
    """JSON-schema walker; ``$ref`` targets are parsed once and shared."""

    def __init__(self, components: Mapping[str, Any]) -> None:
        self.components = components
        self.refs: dict[str, Node] = {}

    def parse(self, schema: Mapping[str, Any]) -> Node:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in self.refs:
                node = Node("any")
                self.refs[name] = node  # placeholder breaks recursion
                parsed = self.parse(self.components.get(name, {}))
                node.__dict__.update(parsed.__dict__)
            return self.refs[name]
        for key in ("anyOf", "oneOf"):
            if key in schema and "discriminator" not in schema:
                options = [self.parse(s) for s in schema[key]]
                return (
                    options[0] if len(options) == 1 else Node("union", options=options)
                )
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.parse(schema["allOf"][0])
        props = schema.get("properties", {})
        if props.get("object_type", {}).get("const") == "array":
            return Node("array", spec=_array_spec(schema))
        typ = schema.get("type")
        if typ == "object" or props:
            if props:
                return Node(
                    "model",
                    fields={k: self.parse(v) for k, v in props.items()},
                    required=frozenset(schema.get("required", ())),
                    closed=schema.get("additionalProperties") is False,
                )
            extra = schema.get("additionalProperties")
            child = self.parse(extra) if isinstance(extra, Mapping) else ANY
            return Node("dict", child=child)
        if typ == "array":
            items = schema.get("items")
            return Node("list", child=self.parse(items) if items else ANY)
        if isinstance(typ, str):
            return Node("scalar", type_name=typ)
        return ANY


def _array_spec(schema: Mapping[str, Any]) -> ArraySpec:
    props = schema["properties"]
    shape_schema = props.get("shape", {})
    shape: tuple[int | None, ...] | None = None
    # The rank is fixed when the shape list has one length (tesseract-core writes
    # minItems == maxItems); `Array[..., dtype]` has no maxItems at all.
    rank = shape_schema.get("maxItems")
    if rank is not None and shape_schema.get("minItems", rank) == rank:
        dims: list[int | None] = []
        for item in shape_schema.get("prefixItems", [{}] * rank):
            # A fixed dimension N is written as enum [1, N]: 1 broadcasts to N.
            dims.append(max(item["enum"]) if "enum" in item else None)
        shape = tuple(dims)
    dtype_schema = props.get("dtype", {})
    examples = dtype_schema.get("examples") or [None]
    enum = dtype_schema.get("enum", [])
    dtype = enum[0] if len(enum) == 1 else examples[0]
    flags = schema.get("array_flags", ())
    return ArraySpec(shape, dtype, "DIFFERENTIABLE" in flags)


def specs_of(side: Mapping[str, Any]) -> dict[str, ArraySpec]:
    out = {}
    for pattern, info in side.get("differentiable_arrays", {}).items():
        shape = info.get("shape")
        out[pattern] = ArraySpec(
            None if shape is None else tuple(shape), info.get("dtype"), True
        )
    return out


@dataclass(frozen=True)
class OpenAPIParts:
    """The pieces of a Tesseract's OpenAPI document that tess_ad reads.

    Attributes:
        inputs: The parsed ``inputs`` of the ``apply`` request.
        input_specs: ``differentiable_arrays`` of the inputs.
        outputs: The parsed ``apply`` result.
        output_specs: ``differentiable_arrays`` of the outputs.
        endpoints: The endpoint names the Tesseract serves.
    """

    inputs: Node
    input_specs: dict[str, ArraySpec]
    outputs: Node
    output_specs: dict[str, ArraySpec]
    endpoints: frozenset[str]


def parse_openapi(openapi: Mapping[str, Any]) -> OpenAPIParts:
    """Parse a Tesseract's OpenAPI document.

    Raises:
        ValueError: If it lacks ``components.schemas.ApplyInputSchema`` or
            ``ApplyOutputSchema`` (the caller names what it was reading).
    """
    try:
        components = openapi["components"]["schemas"]
        apply_in = components["ApplyInputSchema"]
        apply_out = components["ApplyOutputSchema"]
    except (KeyError, TypeError):
        raise ValueError(
            "this does not look like a Tesseract's OpenAPI schema: "
            "components.schemas.ApplyInputSchema/ApplyOutputSchema are missing"
        ) from None
    parser = Parser(components)
    in_root = apply_in.get("properties", {}).get("inputs", apply_in)
    return OpenAPIParts(
        parser.parse(in_root),
        specs_of(apply_in),
        parser.parse(apply_out),
        specs_of(apply_out),
        frozenset(p.strip("/") for p in openapi.get("paths", {})),
    )


def abstract_to_placeholders(abstract: Any, placeholder: Any) -> Any:
    """An ``abstract_eval`` answer with each ``{"shape", "dtype"}`` leaf made an array.

    Args:
        abstract: The nested answer of the ``abstract_eval`` endpoint.
        placeholder: ``(shape, dtype) -> array`` making the stand-in arrays.
    """
    if isinstance(abstract, Mapping):
        if set(abstract) == {"shape", "dtype"}:
            return placeholder(tuple(abstract["shape"]), abstract["dtype"])
        return {
            k: abstract_to_placeholders(v, placeholder) for k, v in abstract.items()
        }
    if isinstance(abstract, list | tuple):
        return type(abstract)(
            abstract_to_placeholders(v, placeholder) for v in abstract
        )
    if (
        hasattr(abstract, "shape")
        and hasattr(abstract, "dtype")
        and not hasattr(abstract, "__array__")
    ):  # a ShapeDType-like object
        return placeholder(tuple(abstract.shape), str(abstract.dtype))
    return abstract
