r"""Leaf paths in tesseract-core's syntax.

A path names one leaf of a nested input or output: ``mesh.points`` (model
fields), ``params.{alpha}`` (dict keys), ``layers.[0].w`` (list items). A
schema's ``differentiable_arrays`` holds *patterns* in which a dict key is
``{}`` and a list index is ``[]``: ``params.{}``, ``layers.[].w``.

Inside ``{...}`` the characters ``{``, ``}`` and ``\\`` are escaped with a
backslash, and a dot belongs to the key, exactly as
``tesseract_core.runtime.tree_transforms`` does; tests check both agree on
every key. The functions are re-implemented here rather than imported so the
core does not depend on the runtime's private helpers, and so a path is split
once and kept as a tuple of segments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "dict_segment",
    "escape_key",
    "get_at_path",
    "join_path",
    "list_segment",
    "matches_pattern",
    "split_path",
    "unescape_key",
]

_SPECIALS = "{}\\"
_INDEX = re.compile(r"^\[(\d+)\]$")


def escape_key(key: str) -> str:
    """Escape the characters that would end a ``{...}`` path segment."""
    return "".join("\\" + c if c in _SPECIALS else c for c in key)


def unescape_key(key: str) -> str:
    """Invert :func:`escape_key`."""
    out: list[str] = []
    i = 0
    while i < len(key):
        if key[i] == "\\" and i + 1 < len(key):
            out.append(key[i + 1])
            i += 2
        else:
            out.append(key[i])
            i += 1
    return "".join(out)


def dict_segment(key: str) -> str:
    """The path segment of a dict key: ``{key}`` with the key escaped."""
    return "{" + escape_key(key) + "}"


def list_segment(index: int) -> str:
    """The path segment of a list item: ``[index]``."""
    return f"[{index}]"


def split_path(path: str) -> tuple[str, ...]:
    """Split a path into its segments; dots inside ``{...}`` belong to the key.

    Example:
        >>> split_path("params.{a.b}.[0]")
        ('params', '{a.b}', '[0]')
    """
    if not path:
        return ()
    parts: list[str] = []
    buf: list[str] = []
    depth = 0
    i = 0
    while i < len(path):
        char = path[i]
        if char == "\\" and i + 1 < len(path):
            buf.append(path[i : i + 2])
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "." and depth == 0:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(char)
        i += 1
    parts.append("".join(buf))
    return tuple(parts)


def join_path(segments: Sequence[str]) -> str:
    """Join segments into a path (the inverse of :func:`split_path`)."""
    return ".".join(segments)


def _segment_matches(pattern: str, segment: str) -> bool:
    if pattern == "{}":
        return segment.startswith("{") and segment.endswith("}")
    if pattern == "[]":
        return _INDEX.match(segment) is not None
    return pattern == segment


def matches_pattern(pattern: Sequence[str], segments: Sequence[str]) -> bool:
    """Whether concrete path segments match pattern segments (``{}``, ``[]`` wildcards)."""
    return len(pattern) == len(segments) and all(
        _segment_matches(p, s) for p, s in zip(pattern, segments, strict=True)
    )


def _step(tree: object, segment: str, path: str) -> object:
    if segment.startswith("{") and segment.endswith("}"):
        key = unescape_key(segment[1:-1])
        return tree[key]  # type: ignore[index]
    match = _INDEX.match(segment)
    if match:
        return tree[int(match.group(1))]  # type: ignore[index]
    if isinstance(tree, dict):
        return tree[segment]
    return getattr(tree, segment)


def get_at_path(tree: object, path: str) -> object:
    """The value at ``path`` in a nested tree of dicts, lists and models.

    Raises:
        KeyError: Naming the path, if it does not exist in ``tree``.
    """
    node = tree
    for segment in split_path(path):
        try:
            node = _step(node, segment, path)
        except (KeyError, IndexError, AttributeError, TypeError):
            raise KeyError(
                f"no value at path {path!r} (segment {segment!r} not found)"
            ) from None
    return node
