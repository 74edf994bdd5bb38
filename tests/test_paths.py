"""tess_ad._paths speaks exactly tesseract-core's path syntax.

Every check compares against ``tesseract_core.runtime.tree_transforms`` (the
oracle): key escaping, path splitting, and looking a value up by path. The
keys are explicit nasty cases, a seeded random batch (always run) and, when
hypothesis is installed, hypothesis-generated keys and trees.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers import example_inputs
from tesseract_core.runtime import tree_transforms as tc

from tess_ad import _paths, tesseract_schema

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a dev extra
    HAVE_HYPOTHESIS = False
else:
    HAVE_HYPOTHESIS = True

NASTY_KEYS = [
    "a.b",
    "{x}",
    "a\\b",
    "",
    "ключ",
    "键.值",
    "🙂{🙃}",
    ".",
    "..",
    "{",
    "}",
    "{}",
    "}{",
    "\\",
    "\\\\",
    "a\\",
    "\\{",
    "\\}",
    "a}.{b",
    "[0]",
    "[]",
    "x.[0].y",
    "beta.v{1}",
    "pressure{bar}",
    " ",
    "tab\there",
    "new\nline",
    "a.{b\\}.c",
    "{{{.}}}",
    "0",
]

_ALPHABET = ".{}\\[]ab0 _é🙂\n"


def _seeded_keys(n: int = 400, seed: int = 20240601) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(_ALPHABET, k=rng.randint(0, 12))) for _ in range(n)]


RANDOM_KEYS = _seeded_keys()


def _check_key(key: str) -> None:
    """All of tess_ad's key/path functions agree with tesseract-core on one key."""
    escaped = _paths.escape_key(key)
    assert escaped == tc.escape_dict_key(key)
    assert _paths.unescape_key(escaped) == key
    assert tc.unescape_dict_key(escaped) == key
    # Unescaping text that escape_key never produced (stray backslashes) too.
    assert _paths.unescape_key(key) == tc.unescape_dict_key(key)

    segment = _paths.dict_segment(key)
    assert segment == "{" + tc.escape_dict_key(key) + "}"
    path = _paths.join_path(("root", segment, "[2]", "leaf"))
    assert _paths.split_path(path) == ("root", segment, "[2]", "leaf")
    assert list(_paths.split_path(path)) == tc.split_path(path)
    assert _paths.matches_pattern(
        _paths.split_path("root.{}.[].leaf"), _paths.split_path(path)
    )

    leaf = np.arange(3.0)
    tree = {"root": {key: [0, 1, {"leaf": leaf}], "other": 1}}
    assert _paths.get_at_path(tree, path) is leaf
    if key:  # tesseract-core cannot address an empty key (see test_empty_key)
        assert tc.get_at_path(tree, path) is leaf


@pytest.mark.parametrize("key", NASTY_KEYS)
def test_nasty_keys_agree_with_tesseract_core(key):
    _check_key(key)


def test_seeded_random_keys_agree_with_tesseract_core():
    assert len(set(RANDOM_KEYS)) > 300  # the batch really is varied
    for key in RANDOM_KEYS:
        _check_key(key)


@pytest.mark.parametrize(
    ("key", "escaped"),
    [
        ("a.b", "a.b"),  # a dot belongs to the key, no escape needed
        ("{x}", "\\{x\\}"),
        ("a\\b", "a\\\\b"),
        ("", ""),
        ("beta.v{1}", "beta.v\\{1\\}"),
    ],
)
def test_escape_key_explicit(key, escaped):
    assert _paths.escape_key(key) == escaped
    assert _paths.dict_segment(key) == "{" + escaped + "}"


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("params.{u}", ("params", "{u}")),
        ("layers.[0].w", ("layers", "[0]", "w")),
        ("params.{a.b}.[0]", ("params", "{a.b}", "[0]")),
        ("params.{beta.v\\{1\\}}", ("params", "{beta.v\\{1\\}}")),
        ("a.{b\\\\}.c", ("a", "{b\\\\}", "c")),
        (
            "mesh.point_data.{pressure\\{bar\\}}",
            ("mesh", "point_data", "{pressure\\{bar\\}}"),
        ),
        ("x", ("x",)),
        ("layers.[].w", ("layers", "[]", "w")),
        ("params.{}", ("params", "{}")),
    ],
)
def test_split_path_explicit(path, segments):
    assert _paths.split_path(path) == segments
    assert list(segments) == tc.split_path(path)
    assert _paths.join_path(segments) == path


def test_empty_path_is_the_root():
    tree = {"a": 1}
    assert _paths.split_path("") == ()
    assert _paths.get_at_path(tree, "") is tree
    assert tc.get_at_path(tree, "") is tree


def test_empty_key():
    # tess_ad writes the empty key as ``{}`` (the only spelling the syntax
    # allows) and reads it back; tesseract-core's get_at_path refuses ``{}``
    # (its dict-key regex needs one character), so such a key can be
    # flattened but not differentiated through a Tesseract endpoint.
    leaf = np.zeros(2)
    tree = {"params": {"": leaf}}
    assert _paths.dict_segment("") == "{}"
    assert _paths.get_at_path(tree, "params.{}") is leaf
    with pytest.raises(ValueError, match="Invalid path"):
        tc.get_at_path(tree, "params.{}")


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("layers.[].w", "layers.[0].w", True),
        ("layers.[].w", "layers.[12].w", True),
        ("layers.[].w", "layers.[x].w", False),
        ("layers.[].w", "layers.[0].b", False),
        ("layers.[].w", "layers.[0].w.[0]", False),
        ("layers.[].w", "layers.{0}.w", False),
        ("params.{}", "params.{alpha}", True),
        ("params.{}", "params.{a.b}", True),
        ("params.{}", "params.{beta.v\\{1\\}}", True),
        ("params.{}", "params.[0]", False),
        ("params.{}", "params", False),
        ("params.{}", "other.{alpha}", False),
        ("x", "x", True),
        ("x", "y", False),
    ],
)
def test_matches_pattern(pattern, path, expected):
    result = _paths.matches_pattern(_paths.split_path(pattern), _paths.split_path(path))
    assert result is expected


def test_list_segment():
    assert _paths.list_segment(0) == "[0]"
    assert _paths.list_segment(17) == "[17]"


def test_get_at_path_walks_models_dicts_and_lists():
    pydantic = pytest.importorskip("pydantic")

    class Inner(pydantic.BaseModel):
        v: list[float]

    class Outer(pydantic.BaseModel):
        inner: Inner
        table: dict[str, Inner]

    model = Outer(inner=Inner(v=[1.0, 2.0]), table={"k.{1}": Inner(v=[3.0])})
    for path in ("inner.v.[1]", "table.{k.\\{1\\}}.v.[0]", "inner", "table"):
        assert _paths.get_at_path(model, path) == tc.get_at_path(model, path)
    assert _paths.get_at_path(model, "table.{k.\\{1\\}}.v.[0]") == 3.0


@pytest.mark.parametrize(
    "path", ["params.{gamma}", "layers.[7].w", "layers.[0].nope", "config.label.x"]
)
def test_get_at_path_missing_names_the_path(path):
    tree = example_inputs("nested")
    with pytest.raises(KeyError, match=_quoted(path)):
        _paths.get_at_path(tree, path)


def _quoted(path: str) -> str:
    return re.escape(repr(path))


# --------------------------------------------------------------------------
# Paths that tess_ad *produces* are tesseract-core paths
# --------------------------------------------------------------------------


def _flat_paths_check(schema_side: Any, tree: Any) -> list[str]:
    flat = schema_side.flatten(tree)
    for path, leaf in flat.items():
        # tesseract-core finds the very same object at every path tess_ad names.
        assert tc.get_at_path(tree, path) is leaf.value, path
        assert _paths.get_at_path(tree, path) is leaf.value, path
        assert list(_paths.split_path(path)) == tc.split_path(path), path
    return list(flat)


@pytest.mark.parametrize("name", ["rosenbrock", "nested", "float32", "meshstats_fd"])
def test_example_paths_are_accepted_by_tesseract_core(local_tesseract, name):
    t = local_tesseract(name)
    schema = tesseract_schema(t)
    inputs = example_inputs(name)
    assert _flat_paths_check(schema.inputs, inputs)
    assert _flat_paths_check(schema.outputs, t.apply(inputs))


def test_nested_paths_of_keys_with_dots_and_braces(local_tesseract):
    schema = tesseract_schema(local_tesseract("nested"))
    paths = _flat_paths_check(schema.inputs, example_inputs("nested"))
    assert paths[:2] == ["params.{alpha}", "params.{beta.v\\{1\\}}"]


def _nested_with_keys(keys: list[str]) -> dict:
    base = example_inputs("nested")
    base["params"] = {k: np.full(3, float(i)) for i, k in enumerate(keys)}
    return base


def _mesh_with_keys(keys: list[str]) -> dict:
    base = example_inputs("meshstats_fd")
    base["mesh"]["point_data"] = {
        k: np.full((5, 1), float(i)) for i, k in enumerate(keys)
    }
    return base


def test_flatten_paths_for_many_keys(local_tesseract):
    nested = tesseract_schema(local_tesseract("nested"))
    mesh = tesseract_schema(local_tesseract("meshstats_fd"))
    keys = [k for k in dict.fromkeys(NASTY_KEYS + RANDOM_KEYS) if k]
    tree = _nested_with_keys(keys)
    paths = _flat_paths_check(nested.inputs, tree)
    expected = ["params.{" + tc.escape_dict_key(k) + "}" for k in keys]
    assert paths[: len(keys)] == expected
    assert nested.inputs.flatten(tree).differentiable_paths[: len(keys)] == tuple(
        expected
    )
    paths = _flat_paths_check(mesh.inputs, _mesh_with_keys(keys))
    assert [p for p in paths if p.startswith("mesh.point_data.")] == [
        "mesh.point_data.{" + tc.escape_dict_key(k) + "}" for k in keys
    ]


# --------------------------------------------------------------------------
# hypothesis: random keys and random trees
# --------------------------------------------------------------------------


def _walk(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Leaf paths of a dict/list tree, written with tesseract-core's own escaping."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            seg = "{" + tc.escape_dict_key(k) + "}"
            yield from _walk(v, f"{path}.{seg}" if path else seg)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            seg = f"[{i}]"
            yield from _walk(v, f"{path}.{seg}" if path else seg)
    else:
        yield path, tree


if HAVE_HYPOTHESIS:
    _keys = st.one_of(
        st.text(min_size=1, max_size=16),
        st.text(alphabet=_ALPHABET, min_size=1, max_size=16),
    )
    _trees = st.recursive(
        st.builds(object),
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3),
            st.dictionaries(_keys, children, min_size=1, max_size=3),
        ),
        max_leaves=12,
    ).filter(lambda t: isinstance(t, dict))

    @settings(max_examples=300, deadline=None)
    @given(
        key=st.one_of(st.text(max_size=24), st.text(alphabet=_ALPHABET, max_size=24))
    )
    def test_hypothesis_keys_agree_with_tesseract_core(key):
        _check_key(key)

    @settings(max_examples=300, deadline=None)
    @given(path=st.text(min_size=1, max_size=40))
    def test_hypothesis_split_path_agrees_on_any_text(path):
        # Any text at all, unbalanced braces and stray backslashes included.
        assert list(_paths.split_path(path)) == tc.split_path(path)
        assert _paths.join_path(_paths.split_path(path)) == path

    @settings(max_examples=200, deadline=None)
    @given(tree=_trees)
    def test_hypothesis_get_at_path_agrees_on_random_trees(tree):
        for path, leaf in _walk(tree):
            assert _paths.get_at_path(tree, path) is leaf
            assert tc.get_at_path(tree, path) is leaf

    @settings(max_examples=100, deadline=None)
    @given(keys=st.lists(_keys, min_size=1, max_size=6, unique=True))
    def test_hypothesis_flatten_paths_are_tesseract_core_paths(local_tesseract, keys):
        schema = tesseract_schema(local_tesseract("nested"))
        tree = _nested_with_keys(keys)
        paths = _flat_paths_check(schema.inputs, tree)
        assert paths[: len(keys)] == [
            "params.{" + tc.escape_dict_key(k) + "}" for k in keys
        ]

else:  # pragma: no cover

    def test_hypothesis_installed():
        pytest.skip("hypothesis is not installed; the seeded random keys still ran")
