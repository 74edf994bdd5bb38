"""The schema-leaf pytree (tess_ad._schema) against the example Tesseracts.

In-process and served (a real ``tesseract-runtime serve``): flatten/unflatten
round trips every example input and output exactly, the differentiable flags
are exactly the schema's ``differentiable_arrays``, bad input is a
:class:`SchemaError` naming the path, and a client's schema is read once.
"""

from __future__ import annotations

import base64
import gc
import importlib.util
import re
import sys
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import EXAMPLE_NAMES, example_api, example_inputs
from tesseract_core import Tesseract
from tesseract_core.runtime import tree_transforms as tc

from tess_ad import (
    ArraySpec,
    FlatTree,
    SchemaError,
    TesseractSchema,
    as_numpy,
    tesseract_schema,
)

# --------------------------------------------------------------------------
# Strict structural equality
# --------------------------------------------------------------------------


def strict_differences(actual: Any, expected: Any, path: str = "<root>") -> list[str]:
    """Every difference between two trees, by path.

    Same container types (dict/list/tuple, not just "a mapping"), same keys in
    the same order, same lengths; arrays and NumPy scalars of the same type,
    dtype and shape with equal values; anything else of the same type and equal.
    """
    out: list[str] = []
    if type(actual) is not type(expected):
        return [f"{path}: type {type(actual).__name__} != {type(expected).__name__}"]
    if isinstance(expected, dict):
        if list(actual) != list(expected):
            return [f"{path}: keys {list(actual)} != {list(expected)}"]
        for k in expected:
            out += strict_differences(actual[k], expected[k], f"{path}.{k}")
    elif isinstance(expected, list | tuple):
        if len(actual) != len(expected):
            return [f"{path}: length {len(actual)} != {len(expected)}"]
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            out += strict_differences(a, e, f"{path}.[{i}]")
    elif isinstance(expected, np.ndarray | np.generic):
        if actual.dtype != expected.dtype or actual.shape != expected.shape:
            out.append(
                f"{path}: {actual.dtype}{actual.shape} != {expected.dtype}{expected.shape}"
            )
        elif not np.array_equal(
            actual, expected, equal_nan=expected.dtype.kind in "fc"
        ):
            out.append(f"{path}: values {actual!r} != {expected!r}")
    elif actual != expected:
        out.append(f"{path}: {actual!r} != {expected!r}")
    return out


def assert_strict_equal(actual: Any, expected: Any) -> None:
    diffs = strict_differences(actual, expected)
    assert not diffs, "trees differ at:\n" + "\n".join(diffs)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),  # key order
        ([1, 2], (1, 2)),  # list vs tuple
        ({"x": [1.0]}, {"x": [1]}),  # float vs int
        (np.zeros(2, np.float32), np.zeros(2)),  # dtype
        (np.zeros((2, 1)), np.zeros(2)),  # shape
        (np.float64(1.0), np.array(1.0)),  # NumPy scalar vs 0-d array
        ({"x": np.array([1.0, 2.0])}, {"x": np.array([1.0, 2.5])}),  # values
        ({"x": [np.array([True])]}, {"x": [np.array([False])]}),  # bool values
        ({"x": "a"}, {"x": "b"}),
        ({"x": None}, {"x": 0}),
    ],
)
def test_strict_equality_helper_detects_differences(a, b):
    assert strict_differences(a, b)


def test_strict_equality_helper_accepts_equal_trees():
    def tree():
        return {"a": [np.arange(3.0), (1, "s")], "b": {"c": np.float32(2), "n": None}}

    assert strict_differences(tree(), tree()) == []
    assert strict_differences(np.array([np.nan]), np.array([np.nan])) == []


# --------------------------------------------------------------------------
# Round trips, in-process and served
# --------------------------------------------------------------------------


def _leaf_identity(tree: Any, flat: FlatTree) -> None:
    """Leaves hold the given values themselves (never copies or conversions)."""
    for path, leaf in flat.items():
        assert leaf.path == path
        assert tc.get_at_path(tree, path) is leaf.value, path


@pytest.mark.served
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_round_trip_inputs_and_outputs(tesseract_factory, name):
    t = tesseract_factory(name)
    schema = tesseract_schema(t)
    inputs = example_inputs(name)

    flat_in = schema.inputs.flatten(inputs)
    _leaf_identity(inputs, flat_in)
    rebuilt = flat_in.unflatten()
    assert_strict_equal(rebuilt, inputs)
    assert rebuilt is not inputs

    outputs = t.apply(inputs)
    flat_out = schema.outputs.flatten(outputs)
    _leaf_identity(outputs, flat_out)
    assert_strict_equal(flat_out.unflatten(), outputs)

    # The rebuilt inputs go through the Tesseract (over HTTP when served) and
    # give exactly the same outputs.
    assert_strict_equal(t.apply(rebuilt), outputs)


@pytest.mark.served
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_served_and_local_agree_leaf_by_leaf(local_tesseract, served_tesseract, name):
    local, served = local_tesseract(name), served_tesseract(name)
    inputs = example_inputs(name)
    s_local, s_served = tesseract_schema(local), tesseract_schema(served)
    assert s_served.inputs.differentiable_arrays == s_local.inputs.differentiable_arrays
    assert (
        s_served.outputs.differentiable_arrays == s_local.outputs.differentiable_arrays
    )
    # The in-process app also lists ``test``, which a server does not serve.
    assert s_served.endpoints - {"test"} == s_local.endpoints - {"test"}
    assert "apply" in s_served.endpoints

    def summary(flat: FlatTree) -> list[tuple]:
        return [(p, lf.differentiable, lf.shape, lf.spec) for p, lf in flat.items()]

    assert summary(s_served.inputs.flatten(inputs)) == summary(
        s_local.inputs.flatten(inputs)
    )
    out_local = s_local.outputs.flatten(local.apply(inputs))
    out_served = s_served.outputs.flatten(served.apply(inputs))
    assert summary(out_served) == summary(out_local)
    for path, leaf in out_local.items():
        other = out_served[path].value
        if leaf.is_array:
            np.testing.assert_array_equal(as_numpy(other), as_numpy(leaf.value))
            assert as_numpy(other).dtype == as_numpy(leaf.value).dtype, path
        else:
            assert other == leaf.value, path


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_unflatten_replaces_exactly_the_named_leaf(local_tesseract, name):
    t = local_tesseract(name)
    schema = tesseract_schema(t)
    for side, tree in (
        (schema.inputs, example_inputs(name)),
        (schema.outputs, t.apply(example_inputs(name))),
    ):
        flat = side.flatten(tree)
        assert len(flat) >= (1 if name == "scales" else 2)  # scales has one leaf a side
        for path in flat:
            sentinel = object()
            rebuilt = flat.unflatten({path: sentinel})
            # tesseract-core's own set_at_path is the oracle.
            assert_strict_equal(rebuilt, tc.set_at_path(tree, {path: sentinel}))
            assert tc.get_at_path(rebuilt, path) is sentinel
            for other in flat:
                if other != path:
                    assert tc.get_at_path(rebuilt, other) is flat[other].value
        # The original tree is untouched.
        assert_strict_equal(flat.unflatten(), tree)


@pytest.mark.served
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_unflatten_updates_all_differentiable_leaves(tesseract_factory, name):
    t = tesseract_factory(name)
    schema = tesseract_schema(t)
    inputs = example_inputs(name)
    flat = schema.inputs.flatten(inputs)
    updates = {
        p: as_numpy(flat[p].value, flat[p].spec.dtype) * 0.5
        for p in flat.differentiable_paths
    }
    assert updates
    rebuilt = flat.unflatten(updates)
    expected = tc.set_at_path(inputs, updates)
    assert_strict_equal(rebuilt, expected)
    assert_strict_equal(t.apply(rebuilt), t.apply(expected))


def test_key_order_of_the_value_is_kept(local_tesseract):
    schema = tesseract_schema(local_tesseract("nested"))
    inputs = example_inputs("nested")
    reordered = {k: inputs[k] for k in reversed(list(inputs))}
    reordered["params"] = {k: reordered["params"][k] for k in ["beta.v{1}", "alpha"]}
    flat = schema.inputs.flatten(reordered)
    assert list(flat)[:5] == [
        "config.label",
        "config.repeat",
        "config.offset",
        "layers.[0].w",
        "layers.[0].b",
    ]
    assert list(flat)[-2:] == ["params.{beta.v\\{1\\}}", "params.{alpha}"]
    assert_strict_equal(flat.unflatten(), reordered)


# --------------------------------------------------------------------------
# Differentiable flags, shapes, specs
# --------------------------------------------------------------------------

F64 = "float64"
EXPECTED_LEAVES: dict[str, dict[str, list[tuple[str, bool, tuple | None]]]] = {
    "rosenbrock": {
        "inputs": [("x", True, (4,)), ("a", False, None), ("b", False, None)],
        "outputs": [("loss", True, ()), ("residuals", True, (6,))],
    },
    "nested": {
        "inputs": [
            ("params.{alpha}", True, (3,)),
            ("params.{beta.v\\{1\\}}", True, (3,)),
            ("layers.[0].w", True, (2, 3)),
            ("layers.[0].b", True, ()),
            ("layers.[0].activation", False, None),
            ("layers.[0].scale", False, (2,)),
            ("layers.[1].w", True, (3, 2)),
            ("layers.[1].b", True, ()),
            ("layers.[1].activation", False, None),
            ("layers.[1].scale", False, (3,)),
            ("config.label", False, None),
            ("config.repeat", False, None),
            ("config.offset", False, None),
        ],
        "outputs": [
            ("out", True, (3,)),
            ("summary.{sumsq}", True, ()),
            ("summary.{mean}", True, ()),
            ("info.label", False, None),
            ("info.n_layers", False, None),
            ("info.positive", False, (3,)),
        ],
    },
    "float32": {
        "inputs": [("x", True, (3,)), ("w", True, ()), ("shift", False, (3,))],
        "outputs": [("y", True, (3,)), ("energy", True, ())],
    },
    "meshstats_fd": {
        "inputs": [
            ("mesh.n_points", False, None),
            ("mesh.n_cells", False, None),
            ("mesh.points", True, (5, 3)),
            ("mesh.num_points_per_cell", False, (2,)),
            ("mesh.cell_connectivity", False, (8,)),
            ("mesh.cell_data.{temperature}", False, (2, 1)),
            ("mesh.point_data.{displacement}", False, (5, 3)),
            ("mesh.point_data.{pressure\\{bar\\}}", False, (5, 1)),
            ("fd_algorithm", False, None),
        ],
        "outputs": [
            ("statistics.first_point_coordinates", True, (3,)),
            ("statistics.barycenter", True, (3,)),
        ],
    },
    "scales": {
        "inputs": [("x", True, (3,))],
        "outputs": [("y", True, (3,))],
    },
    "sleepy": {
        "inputs": [("x", True, (8,)), ("scale", True, ()), ("delay", False, None)],
        "outputs": [("y", True, (8,)), ("total", True, ())],
    },
}

EXPECTED_PATTERNS = {
    "rosenbrock": (
        {"x": ArraySpec((None,), F64, True)},
        {"loss": ArraySpec((), F64, True), "residuals": ArraySpec((None,), F64, True)},
    ),
    "nested": (
        {
            "params.{}": ArraySpec((None,), F64, True),
            "layers.[].w": ArraySpec((None, None), F64, True),
            "layers.[].b": ArraySpec((), F64, True),
        },
        {"out": ArraySpec((None,), F64, True), "summary.{}": ArraySpec((), F64, True)},
    ),
    "float32": (
        {
            "x": ArraySpec((None,), "float32", True),
            "w": ArraySpec((), "float32", True),
        },
        {
            "y": ArraySpec((None,), "float32", True),
            "energy": ArraySpec((), "float32", True),
        },
    ),
    "meshstats_fd": (
        {"mesh.points": ArraySpec((None, 3), F64, True)},
        {
            "statistics.first_point_coordinates": ArraySpec((3,), F64, True),
            "statistics.barycenter": ArraySpec((3,), F64, True),
        },
    ),
    "scales": (
        {"x": ArraySpec((None,), F64, True)},
        {"y": ArraySpec((None,), F64, True)},
    ),
    "sleepy": (
        {"x": ArraySpec((None,), F64, True), "scale": ArraySpec((), F64, True)},
        {"y": ArraySpec((None,), F64, True), "total": ArraySpec((), F64, True)},
    ),
}


@pytest.mark.served
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_differentiable_flags_and_shapes(tesseract_factory, name):
    t = tesseract_factory(name)
    schema = tesseract_schema(t)
    inputs = example_inputs(name)
    in_patterns, out_patterns = EXPECTED_PATTERNS[name]
    assert schema.inputs.differentiable_arrays == in_patterns
    assert schema.outputs.differentiable_arrays == out_patterns

    for side, tree in (
        (schema.inputs, inputs),
        (schema.outputs, t.apply(inputs)),
    ):
        flat = side.flatten(tree)
        expected = EXPECTED_LEAVES[name][side.name]
        got = [(p, lf.differentiable, lf.shape) for p, lf in flat.items()]
        assert got == expected
        assert flat.differentiable_paths == tuple(p for p, d, _ in expected if d)
        assert flat.array_paths == tuple(p for p, _, s in expected if s is not None)
        for path, leaf in flat.items():
            assert leaf.is_array is (leaf.shape is not None)
            if leaf.shape is None:
                assert leaf.dtype is None and leaf.spec is None, path
            else:
                assert leaf.spec is not None, path
                assert leaf.spec.differentiable is leaf.differentiable, path
            pattern = side.differentiable_pattern(path)
            assert (pattern is not None) is leaf.differentiable, path
            if pattern is not None:
                assert leaf.spec == side.differentiable_arrays[pattern]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_expanding_every_pattern_gives_the_differentiable_paths(local_tesseract, name):
    t = local_tesseract(name)
    schema = tesseract_schema(t)
    inputs = example_inputs(name)
    for side, tree in ((schema.inputs, inputs), (schema.outputs, t.apply(inputs))):
        flat = side.flatten(tree)
        expanded = {
            pattern: side.expand(pattern, flat)
            for pattern in side.differentiable_arrays
        }
        assert all(expanded.values()), expanded
        assert sorted(p for ps in expanded.values() for p in ps) == sorted(
            flat.differentiable_paths
        )


def test_expand_concrete_paths(local_tesseract):
    schema = tesseract_schema(local_tesseract("nested"))
    flat = schema.inputs.flatten(example_inputs("nested"))
    assert schema.inputs.expand("params.{}", flat) == [
        "params.{alpha}",
        "params.{beta.v\\{1\\}}",
    ]
    assert schema.inputs.expand("layers.[].w", flat) == ["layers.[0].w", "layers.[1].w"]
    assert schema.inputs.expand("layers.[].scale", flat) == [
        "layers.[0].scale",
        "layers.[1].scale",
    ]
    assert schema.inputs.expand("config.label", flat) == ["config.label"]
    assert schema.inputs.expand("params.[]", flat) == []
    assert schema.inputs.differentiable_pattern("layers.[1].b") == "layers.[].b"
    assert schema.inputs.differentiable_pattern("layers.[1].scale") is None


def test_leaf_spec_carries_the_schema_dtype(local_tesseract):
    t = local_tesseract("float32")
    schema = tesseract_schema(t)
    flat = schema.inputs.flatten(example_inputs("float32"))
    assert flat["x"].spec == ArraySpec((None,), "float32", True)
    assert flat["x"].dtype == np.float32
    # w is given as a Python float: the value is float64, the schema says float32.
    assert flat["w"].value == 1.5
    assert flat["w"].dtype == np.float64
    assert flat["w"].spec == ArraySpec((), "float32", True)
    assert flat["shift"].spec == ArraySpec((None,), "float32", False)
    out = schema.outputs.flatten(t.apply(example_inputs("float32")))
    assert out["y"].dtype == np.float32 and out["y"].spec.dtype == "float32"
    assert out["energy"].dtype == np.float32 and out["energy"].spec.dtype == "float32"
    # Non-differentiable spec dtypes come from the schema too (int32, bool).
    mesh = tesseract_schema(local_tesseract("meshstats_fd"))
    mflat = mesh.inputs.flatten(example_inputs("meshstats_fd"))
    assert mflat["mesh.cell_connectivity"].spec == ArraySpec((None,), "int32", False)
    assert mflat["mesh.cell_connectivity"].dtype == np.int64  # the value's own
    nested = tesseract_schema(local_tesseract("nested"))
    nflat = nested.outputs.flatten(
        local_tesseract("nested").apply(example_inputs("nested"))
    )
    assert nflat["info.positive"].spec == ArraySpec((None,), "bool", False)


# --------------------------------------------------------------------------
# Encoded arrays, tuples, pydantic models
# --------------------------------------------------------------------------


def _base64_array(arr: np.ndarray) -> dict:
    return {
        "object_type": "array",
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "data": {
            "buffer": base64.b64encode(arr.tobytes()).decode(),
            "encoding": "base64",
        },
    }


def test_encoded_arrays_flatten_with_shape_and_dtype(local_tesseract):
    schema = tesseract_schema(local_tesseract("float32"))
    inputs = example_inputs("float32")
    flat = schema.inputs.flatten(inputs)
    x = flat["x"]
    assert x.value is inputs["x"]  # kept encoded, not decoded
    assert x.shape == (3,) and x.dtype == np.float32 and x.differentiable
    decoded = as_numpy(x.value)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, np.array([0.1, 0.7, -1.3], np.float32))
    assert as_numpy(x.value, np.float64).dtype == np.float64
    shift = flat["shift"]
    assert (
        shift.shape == (3,) and shift.dtype == np.float32 and not shift.differentiable
    )
    np.testing.assert_array_equal(
        as_numpy(shift.value), np.array([0.0, 0.5, -0.5], np.float32)
    )


def test_as_numpy_decodes_json_and_base64_arrays():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    json_enc = {
        "object_type": "array",
        "shape": [2, 3],
        "dtype": "float32",
        "data": {"buffer": arr.tolist(), "encoding": "json"},
    }
    for enc in (json_enc, _base64_array(arr)):
        out = as_numpy(enc)
        assert out.dtype == np.float32 and out.shape == (2, 3)
        np.testing.assert_array_equal(out, arr)
    assert as_numpy([1, 2], np.float64).dtype == np.float64
    bad = dict(json_enc, data={"buffer": "x.bin", "encoding": "binref"})
    with pytest.raises(SchemaError, match="binref"):
        as_numpy(bad)


@pytest.mark.served
def test_base64_encoded_inputs_over_http(tesseract_factory):
    t = tesseract_factory("float32")
    schema = tesseract_schema(t)
    inputs = example_inputs("float32")
    x = as_numpy(inputs["x"])
    b64 = dict(inputs, x=_base64_array(x))
    flat = schema.inputs.flatten(b64)
    assert flat["x"].shape == (3,) and flat["x"].dtype == np.float32
    np.testing.assert_array_equal(as_numpy(flat["x"].value), x)
    rebuilt = flat.unflatten()
    assert_strict_equal(rebuilt, b64)
    assert_strict_equal(t.apply(rebuilt), t.apply(inputs))


def test_tuples_stay_tuples(local_tesseract):
    t = local_tesseract("nested")
    schema = tesseract_schema(t)
    inputs = example_inputs("nested")
    inputs["layers"] = tuple(inputs["layers"])
    inputs["layers"][0]["w"] = tuple(tuple(row) for row in inputs["layers"][0]["w"])
    flat = schema.inputs.flatten(inputs)
    assert flat["layers.[0].w"].shape == (2, 3)
    assert isinstance(flat["layers.[0].w"].value, tuple)
    rebuilt = flat.unflatten()
    assert isinstance(rebuilt["layers"], tuple)
    assert_strict_equal(rebuilt, inputs)
    rosen = tesseract_schema(local_tesseract("rosenbrock"))
    x_tuple = {"x": (1.0, 2.0, 3.0), "a": 1.0, "b": 100.0}
    rflat = rosen.inputs.flatten(x_tuple)
    assert rflat["x"].shape == (3,) and rflat["x"].differentiable
    assert_strict_equal(rflat.unflatten(), x_tuple)


def _api_module(name: str) -> Any:
    module_name = f"_tess_ad_test_api_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, example_api(name))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def _as_plain(value: Any) -> Any:
    """A pydantic model as nested dicts of its field values (arrays untouched)."""
    if hasattr(type(value), "model_fields"):
        return {k: _as_plain(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {k: _as_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_as_plain(v) for v in value)
    return value


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_pydantic_models_flatten_like_dicts(local_tesseract, name):
    t = local_tesseract(name)
    schema = tesseract_schema(t)
    model = _api_module(name).InputSchema.model_validate(example_inputs(name))
    flat_model = schema.inputs.flatten(model)
    flat_dict = schema.inputs.flatten(example_inputs(name))
    assert list(flat_model) == list(flat_dict)
    assert flat_model.differentiable_paths == flat_dict.differentiable_paths
    _leaf_identity(model, flat_model)
    rebuilt = flat_model.unflatten()
    assert type(rebuilt) is dict  # models come back as dicts
    assert_strict_equal(rebuilt, _as_plain(model))
    assert_strict_equal(t.apply(rebuilt), t.apply(example_inputs(name)))
    out_model = _api_module(name).OutputSchema.model_validate(
        t.apply(example_inputs(name))
    )
    flat_out = schema.outputs.flatten(out_model)
    assert flat_out.differentiable_paths == tuple(
        p for p, d, _ in EXPECTED_LEAVES[name]["outputs"] if d
    )


# --------------------------------------------------------------------------
# A schema with Optional, tuple, nested-list, union and untyped fields
# --------------------------------------------------------------------------

KITCHEN_SINK_API = """
from typing import Any, Optional, Union

import numpy as np
from pydantic import BaseModel

from tesseract_core.runtime import Array, Differentiable, Float32, Float64


class Inner(BaseModel):
    v: Differentiable[Array[(2,), Float64]]
    tag: str = "t"


class InputSchema(BaseModel):
    maybe: Optional[Differentiable[Array[(None,), Float64]]] = None
    pair: tuple[float, float] = (1.0, 2.0)
    grid: list[list[Differentiable[Array[(None,), Float64]]]]
    inners: dict[str, Inner] = {}
    either: Union[Array[(None,), Float64], str] = "none"
    anything: dict[str, Any] = {}
    f32: Differentiable[Array[(None, 2), Float32]]


class OutputSchema(BaseModel):
    total: Differentiable[Float64]


def apply(inputs: InputSchema) -> OutputSchema:
    total = sum(float(np.sum(a)) for row in inputs.grid for a in row)
    if inputs.maybe is not None:
        total += float(np.sum(inputs.maybe))
    return OutputSchema(total=total + float(np.sum(inputs.f32)))
"""


@pytest.fixture(scope="module")
def kitchen_sink(tmp_path_factory) -> Tesseract:
    path = Path(tmp_path_factory.mktemp("kitchen_sink")) / "tesseract_api.py"
    path.write_text(KITCHEN_SINK_API)
    return Tesseract.from_tesseract_api(str(path))


def _sink_inputs(**overrides: Any) -> dict:
    base = {
        "maybe": None,
        "pair": (1.0, 2.0),
        "grid": [[np.ones(2)], (np.ones(3), np.zeros(1))],
        "inners": {"a.b": {"v": np.ones(2), "tag": "x"}, "{c}": {"v": np.zeros(2)}},
        "either": "word",
        "anything": {"k": [1, 2], "s": "str", "n": {"z": np.ones(2)}},
        "f32": np.ones((3, 2), np.float32),
    }
    return base | overrides


def test_kitchen_sink_leaves(kitchen_sink):
    schema = tesseract_schema(kitchen_sink)
    assert set(schema.inputs.differentiable_arrays) == {
        "maybe",
        "grid.[].[]",
        "inners.{}.v",
        "f32",
    }
    inputs = _sink_inputs()
    flat = schema.inputs.flatten(inputs)
    got = {p: (lf.differentiable, lf.shape) for p, lf in flat.items()}
    assert got == {
        "maybe": (False, None),  # Optional left at None: nothing to differentiate
        "pair.[0]": (False, None),
        "pair.[1]": (False, None),
        "grid.[0].[0]": (True, (2,)),
        "grid.[1].[0]": (True, (3,)),
        "grid.[1].[1]": (True, (1,)),
        "inners.{a.b}.v": (True, (2,)),
        "inners.{a.b}.tag": (False, None),
        "inners.{\\{c\\}}.v": (True, (2,)),
        "either": (False, None),
        "anything.{k}": (False, None),
        "anything.{s}": (False, None),
        "anything.{n}.{z}": (False, (2,)),  # untyped, but an array by its value
        "f32": (True, (3, 2)),
    }
    assert flat["f32"].spec.dtype == "float32"
    rebuilt = flat.unflatten()
    assert isinstance(rebuilt["pair"], tuple) and isinstance(rebuilt["grid"][1], tuple)
    assert_strict_equal(rebuilt, inputs)
    assert_strict_equal(kitchen_sink.apply(rebuilt), kitchen_sink.apply(inputs))
    _leaf_identity(inputs, flat)


def test_kitchen_sink_optional_and_union_branches(kitchen_sink):
    schema = tesseract_schema(kitchen_sink)
    inputs = _sink_inputs(maybe=np.ones(4), either=np.arange(3.0))
    flat = schema.inputs.flatten(inputs)
    assert (flat["maybe"].differentiable, flat["maybe"].shape) == (True, (4,))
    assert flat["maybe"].spec == ArraySpec((None,), "float64", True)
    assert (flat["either"].differentiable, flat["either"].shape) == (False, (3,))
    assert_strict_equal(flat.unflatten(), inputs)
    with pytest.raises(SchemaError, match=re.escape("'maybe'")):
        schema.inputs.flatten(_sink_inputs(maybe="text"))
    with pytest.raises(SchemaError, match=re.escape("'inners.{a.b}.v'")):
        schema.inputs.flatten(
            _sink_inputs(inners={"a.b": {"v": np.ones(3)}})  # fixed dimension 2
        )


# --------------------------------------------------------------------------
# Bad input: SchemaError naming the path
# --------------------------------------------------------------------------


def _q(path: str) -> str:
    """Pattern for the path as it appears quoted in a message."""
    return re.escape(repr(path))


@pytest.fixture(scope="module")
def schemas(local_tesseract) -> dict[str, TesseractSchema]:
    return {name: tesseract_schema(local_tesseract(name)) for name in EXAMPLE_NAMES}


@pytest.mark.parametrize(
    "path", ["params.{gamma}", "layers.[2].w", "layers.[0]", "params", "nope"]
)
def test_unflatten_unknown_path(schemas, path):
    flat = schemas["nested"].inputs.flatten(example_inputs("nested"))
    with pytest.raises(SchemaError, match=_q(path)):
        flat.unflatten({path: np.zeros(3)})
    with pytest.raises(KeyError, match=_q(path)):
        flat[path]


def test_check_paths(schemas):
    flat = schemas["nested"].inputs.flatten(example_inputs("nested"))
    flat.check_paths(["params.{alpha}", "layers.[1].b"])  # known: no error
    with pytest.raises(SchemaError, match=_q("layers.[9].w")) as info:
        flat.check_paths(["params.{alpha}", "layers.[9].w"], "vjp_inputs")
    assert "vjp_inputs" in str(info.value)
    assert "params.{alpha}" in str(info.value)  # lists the known paths


def _nested(**changes: Any) -> dict:
    inputs = example_inputs("nested")
    inputs.update(changes)
    return inputs


def _layer0(**changes: Any) -> dict:
    inputs = example_inputs("nested")
    inputs["layers"][0].update(changes)
    return inputs


def _mesh(**changes: Any) -> dict:
    inputs = example_inputs("meshstats_fd")
    inputs["mesh"].update(changes)
    return inputs


def _without(tree: dict, *path: str) -> dict:
    node = tree
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return tree


BAD_INPUTS = [
    # differentiable array given a non-array
    ("rosenbrock", {"x": "abc", "a": 1.0}, "x"),
    ("rosenbrock", {"x": None, "a": 1.0}, "x"),
    ("rosenbrock", {"x": ["a", "b"]}, "x"),
    ("nested", _layer0(w={"a": 1.0}), "layers.[0].w"),
    ("nested", _nested(params={"alpha": "text"}), "params.{alpha}"),
    ("nested", _nested(params={"x.{y}": None}), "params.{x.\\{y\\}}"),
    ("nested", _layer0(b=[[1.0], [2.0]]), "layers.[0].b"),
    # static array given a non-array
    ("nested", _layer0(scale="big"), "layers.[0].scale"),
    # rank mismatch
    ("rosenbrock", {"x": np.zeros((2, 2))}, "x"),
    ("nested", _layer0(w=[1.0, 2.0]), "layers.[0].w"),
    ("float32", dict(example_inputs("float32"), shift=np.zeros((3, 1))), "shift"),
    # fixed dimension mismatch
    ("meshstats_fd", _mesh(points=np.zeros((5, 4))), "mesh.points"),
    ("meshstats_fd", _mesh(points=np.zeros((5, 1))), "mesh.points"),
    # unknown field (additionalProperties false)
    ("rosenbrock", {"x": [1.0, 2.0], "c": 3.0}, "c"),
    ("nested", _layer0(bias=0.0), "layers.[0].bias"),
    ("nested", _nested(config={"lable": "typo"}), "config.lable"),
    ("meshstats_fd", _mesh(colour="red"), "mesh.colour"),
    # missing required field
    ("rosenbrock", {"a": 1.0}, "x"),
    ("nested", _without(example_inputs("nested"), "layers"), "layers"),
    ("nested", _without(example_inputs("nested"), "layers", 1, "w"), "layers.[1].w"),
    (
        "meshstats_fd",
        _without(example_inputs("meshstats_fd"), "mesh", "points"),
        "mesh.points",
    ),
    # a list where a dict is expected, and the other way round
    ("nested", _nested(params=[[1.0, 2.0]]), "params"),
    ("nested", _nested(config=["demo", 1, 0.0]), "config"),
    ("meshstats_fd", _mesh(point_data=[np.zeros((5, 1))]), "mesh.point_data"),
    ("nested", _nested(layers={"0": example_inputs("nested")["layers"][0]}), "layers"),
    ("nested", _nested(layers=[[1.0, 2.0]]), "layers.[0]"),
]


@pytest.mark.parametrize(
    ("name", "inputs", "path"),
    BAD_INPUTS,
    ids=[f"{name}-{path}-{i}" for i, (name, _, path) in enumerate(BAD_INPUTS)],
)
def test_bad_inputs_name_the_path(schemas, name, inputs, path):
    with pytest.raises(SchemaError, match=_q(path)):
        schemas[name].inputs.flatten(inputs)


BAD_OUTPUTS = [
    ("rosenbrock", {"loss": "nan", "residuals": np.zeros(6)}, "loss"),
    ("rosenbrock", {"loss": 1.0, "residuals": np.zeros((6, 1))}, "residuals"),
    (
        "meshstats_fd",
        {
            "statistics": {
                "first_point_coordinates": np.zeros(3),
                "barycenter": np.zeros(4),
            }
        },
        "statistics.barycenter",
    ),
    (
        "nested",
        {"out": np.zeros(3), "summary": {"sumsq": None}, "info": {}},
        "summary.{sumsq}",
    ),
]


@pytest.mark.parametrize(("name", "outputs", "path"), BAD_OUTPUTS)
def test_bad_outputs_name_the_path(schemas, name, outputs, path):
    with pytest.raises(SchemaError, match=_q(path)):
        schemas[name].outputs.flatten(outputs)


def test_bad_root(schemas):
    with pytest.raises(SchemaError, match="inputs"):
        schemas["rosenbrock"].inputs.flatten([1.0, 2.0])
    with pytest.raises(SchemaError, match="must be a dict"):
        schemas["rosenbrock"].inputs.flatten([1.0, 2.0], check=False)


def test_check_false_skips_shape_checks_but_not_unknown_fields(schemas):
    side = schemas["meshstats_fd"].inputs
    flat = side.flatten(_mesh(points=np.zeros((5, 4))), check=False)
    assert flat["mesh.points"].shape == (5, 4)
    flat = side.flatten(
        _without(example_inputs("meshstats_fd"), "mesh", "points"), check=False
    )
    assert "mesh.points" not in flat
    with pytest.raises(SchemaError, match=_q("mesh.colour")):
        side.flatten(_mesh(colour="red"), check=False)


def test_broadcastable_fixed_dimension_only_for_static_arrays(schemas):
    # A fixed dimension N accepts 1 (broadcast) for a static array only; a
    # differentiable leaf must have exactly N (its gradient has that shape).
    side = schemas["meshstats_fd"].inputs
    with pytest.raises(SchemaError, match=_q("mesh.points")):
        side.flatten(_mesh(points=np.zeros((5, 1))))
    assert side.flatten(_mesh(points=np.zeros((2, 3))))["mesh.points"].shape == (2, 3)


def test_from_openapi_rejects_non_tesseract_documents():
    with pytest.raises(SchemaError, match="ApplyInputSchema"):
        TesseractSchema.from_openapi({"openapi": "3.1.0", "paths": {}})


# --------------------------------------------------------------------------
# Schema read once per client
# --------------------------------------------------------------------------


class SchemaReadSpy:
    """Delegates to a real client and counts reads of ``openapi_schema``."""

    def __init__(self, client: Tesseract) -> None:
        self._inner = client
        self.reads = 0

    @property
    def openapi_schema(self) -> dict:
        self.reads += 1
        return self._inner.openapi_schema

    def apply(self, inputs: dict) -> dict:
        return self._inner.apply(inputs)


def test_schema_cached_per_client(local_tesseract):
    t = local_tesseract("rosenbrock")
    assert tesseract_schema(t) is tesseract_schema(t)
    spy = SchemaReadSpy(t)
    first = tesseract_schema(spy)
    for _ in range(5):
        assert tesseract_schema(spy) is first
        first.inputs.flatten(example_inputs("rosenbrock"))
    assert spy.reads == 1
    other = SchemaReadSpy(t)
    assert tesseract_schema(other) is not first  # per client object
    assert other.reads == 1


def test_schema_cache_does_not_keep_clients_alive(local_tesseract):
    spy = SchemaReadSpy(local_tesseract("rosenbrock"))
    tesseract_schema(spy)
    ref = weakref.ref(spy)
    del spy
    gc.collect()
    assert ref() is None


def test_not_a_tesseract():
    with pytest.raises(TypeError, match="openapi_schema"):
        tesseract_schema(object())


@pytest.mark.served
def test_served_client_fetches_openapi_once(served_tesseract):
    t = served_tesseract("rosenbrock")  # a fresh client of the shared server
    session = t._client._session
    urls: list[str] = []
    send = session.send

    def counting_send(request, **kwargs):
        urls.append(request.url)
        return send(request, **kwargs)

    session.send = counting_send
    spy = SchemaReadSpy(t)
    try:
        inputs = example_inputs("rosenbrock")
        first = tesseract_schema(t)
        for _ in range(3):
            assert tesseract_schema(t) is first
            assert tesseract_schema(spy) is tesseract_schema(spy)
            outputs = t.apply(inputs)
            first.outputs.flatten(outputs)
            first.inputs.flatten(inputs)
    finally:
        del session.send
    assert "send" not in vars(session)
    paths = [u.split("?")[0].rsplit("/", 1)[-1] for u in urls]
    assert paths.count("apply") == 3  # the counter sees real requests
    assert paths.count("openapi.json") == 1, urls
    assert spy.reads == 1


def test_flat_tree_is_a_read_only_mapping(schemas):
    flat = schemas["rosenbrock"].inputs.flatten(example_inputs("rosenbrock"))
    assert isinstance(flat, Mapping)
    assert len(flat) == 3 and "x" in flat and "y" not in flat
    assert flat.leaf_values() == {"x": [-1.2, 1.0, 0.5, 2.0], "a": 1.0, "b": 100.0}
    assert [leaf.path for leaf in flat.values()] == ["x", "a", "b"]
    assert "x" in repr(flat)


def test_schema_error_is_a_pydantic_validation_error_with_our_message():
    """Caught by ``except pydantic.ValidationError`` / ``ValueError``; str, pickle, notes intact."""
    import pickle

    import pydantic

    from tess_ad import SchemaError

    err = SchemaError(
        "inputs path 'summary.{mean}' has shape (4,). Expected shape: (3,)"
    )
    assert isinstance(err, pydantic.ValidationError) and isinstance(err, ValueError)
    assert (
        str(err) == "inputs path 'summary.{mean}' has shape (4,). Expected shape: (3,)"
    )
    assert err.args == (str(err),)
    assert [e["type"] for e in err.errors()] == ["tess_ad_schema"]
    err.add_note("a note")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is SchemaError and str(again) == str(err)
    assert again.__notes__ == ["a note"]
    with pytest.raises(pydantic.ValidationError, match="Expected shape"):
        raise SchemaError("Expected shape: (3,)")


def test_union_of_a_list_of_arrays_and_a_string_picks_the_list_without_stacking_it():
    """LazySequence[Differentiable[Array]] is ``list[...] | str``: each array is a leaf."""
    api = (
        Path(__file__).parent
        / "jax_adapter"
        / "tesseracts"
        / "sequence"
        / "tesseract_api.py"
    )
    schema = tesseract_schema(Tesseract.from_tesseract_api(str(api)))
    equal = [
        np.ones(2),
        np.zeros(2),
    ]  # np.asarray would stack these into one (2, 2) array
    flat = schema.inputs.flatten({"items": equal, "shift": 0.5})
    assert [(p, leaf.differentiable, leaf.shape) for p, leaf in flat.items()] == [
        ("items.[0]", True, (2,)),
        ("items.[1]", True, (2,)),
        ("shift", True, ()),
    ]
    flat = schema.inputs.flatten({"items": "@data/*.json", "shift": 0.5})
    assert flat["items"].value == "@data/*.json" and not flat["items"].differentiable
