"""The drop-in server-side helpers against tesseract-core's, on the meshstats Tesseract."""

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_trees_close, example_api, example_inputs
from pydantic import BaseModel, ValidationError
from tesseract_core.runtime import Array, Differentiable, Float64
from tesseract_core.runtime.core import load_module_from_path
from tesseract_core.runtime.experimental import (
    finite_difference_jacobian as core_jacobian,
)
from tesseract_core.runtime.experimental import (
    finite_difference_jvp as core_jvp,
)
from tesseract_core.runtime.experimental import (
    finite_difference_vjp as core_vjp,
)

import tess_ad

OUTS = {"statistics.barycenter", "statistics.first_point_coordinates"}


@pytest.fixture(scope="module")
def mesh():
    api = load_module_from_path(example_api("meshstats_fd"))
    inputs = api.InputSchema.model_validate(example_inputs("meshstats_fd"))
    calls = {"n": 0}

    def counted_apply(inp):
        calls["n"] += 1
        return api.apply(inp)

    return api, inputs, counted_apply, calls


def linear_jacobians(points):
    n = points.shape[0]
    eye = np.eye(3)
    first = np.zeros((3, n, 3))
    first[:, 0, :] = eye
    bary = np.repeat(eye[:, None, :], n, axis=1) / n
    return {
        "statistics.first_point_coordinates": {"mesh.points": first},
        "statistics.barycenter": {"mesh.points": bary},
    }


@pytest.mark.parametrize(
    ("algorithm", "ours", "theirs"),
    [
        ("central", lambda n: 2 * n, lambda n: 2 * n * 2 + 1),
        ("forward", lambda n: n + 1, lambda n: n * 2 + 1),
    ],
)
def test_jacobian_agrees_with_tesseract_core_in_fewer_calls(
    mesh, algorithm, ours, theirs
):
    _api, inputs, apply, calls = mesh
    n = inputs.mesh.points.size
    calls["n"] = 0
    got = tess_ad.finite_difference_jacobian(
        apply, inputs, {"mesh.points"}, OUTS, algorithm=algorithm
    )
    our_calls = calls["n"]
    calls["n"] = 0
    ref = core_jacobian(
        apply, inputs, {"mesh.points"}, OUTS, algorithm=algorithm, eps=1e-6
    )
    their_calls = calls["n"]
    assert our_calls == ours(n)
    assert their_calls == theirs(n)
    tol = 1e-8 if algorithm == "central" else 1e-6
    assert_trees_close(got, ref, rtol=tol, atol=tol)
    assert_trees_close(got, linear_jacobians(inputs.mesh.points), rtol=tol, atol=tol)


def test_vjp_and_jvp_agree_with_tesseract_core(mesh):
    _api, inputs, apply, calls = mesh
    ct = {
        "statistics.barycenter": np.array([1.0, 2.0, 3.0]),
        "statistics.first_point_coordinates": np.array([0.5, 0.0, -1.0]),
    }
    t = {"mesh.points": np.arange(15.0).reshape(5, 3)}
    calls["n"] = 0
    vjp = tess_ad.finite_difference_vjp(apply, inputs, {"mesh.points"}, OUTS, ct)
    assert calls["n"] == 2 * 15
    calls["n"] = 0
    ref_vjp = core_vjp(apply, inputs, {"mesh.points"}, OUTS, ct, eps=1e-6)
    assert calls["n"] == 2 * 15 * 2
    assert_trees_close(vjp, ref_vjp, rtol=1e-8, atol=1e-8)
    calls["n"] = 0
    jvp = tess_ad.finite_difference_jvp(apply, inputs, {"mesh.points"}, OUTS, t)
    assert calls["n"] == 2
    assert_trees_close(
        jvp,
        core_jvp(apply, inputs, {"mesh.points"}, OUTS, t, eps=1e-6),
        rtol=1e-7,
        atol=1e-7,
    )


def test_stochastic_vjp_is_seeded_and_cheap(mesh):
    _api, inputs, apply, calls = mesh
    ct = {"statistics.barycenter": np.ones(3)}
    calls["n"] = 0
    a = tess_ad.finite_difference_vjp(
        apply,
        inputs,
        {"mesh.points"},
        {"statistics.barycenter"},
        ct,
        algorithm="stochastic",
        num_samples=4,
        seed=0,
    )
    assert calls["n"] == 8
    b = tess_ad.finite_difference_vjp(
        apply,
        inputs,
        {"mesh.points"},
        {"statistics.barycenter"},
        ct,
        algorithm="stochastic",
        num_samples=4,
        seed=0,
    )
    assert_trees_close(a, b, rtol=0)


def test_inputs_are_not_mutated(mesh):
    api, inputs, _apply, _calls = mesh
    before = inputs.mesh.points.copy()
    seen = []

    def spy_apply(inp):
        seen.append(inp)
        return api.apply(inp)

    tess_ad.finite_difference_jacobian(spy_apply, inputs, {"mesh.points"}, OUTS)
    np.testing.assert_array_equal(inputs.mesh.points, before)
    assert all(type(s) is type(inputs) for s in seen)


class Plain(BaseModel):
    x: Differentiable[Array[(None,), Float64]]
    table: dict[str, Array[(None,), Float64]]


class PlainOut(BaseModel):
    y: Differentiable[Array[(None,), Float64]]


def test_a_model_without_validators_is_not_revalidated():
    """No validator anywhere: perturbed points are model copies sharing the static leaves."""
    inputs = Plain.model_validate({"x": [1.0, 2.0], "table": {"w": [3.0, 4.0]}})
    seen = []

    def apply(inp):
        seen.append(inp)
        return PlainOut(y=inp.x * inp.table["w"])

    jac = tess_ad.finite_difference_jacobian(apply, inputs, {"x"}, {"y"})
    np.testing.assert_allclose(jac["y"]["x"], np.diag([3.0, 4.0]), rtol=1e-9)
    assert seen and all(s.table is inputs.table for s in seen)


@pytest.fixture(scope="module")
def disk():
    return load_module_from_path(example_api("disk_area"))


def test_a_validator_that_derives_state_sees_every_perturbed_point(disk):
    """``area`` is made by the InputSchema's validator from ``radius``: tesseract-core's number."""
    radius = np.array([1.0, 2.0])
    inputs = disk.InputSchema.model_validate({"radius": radius})
    expected = np.diag(2.0 * np.pi * radius)  # d(pi r^2)/dr; 12.566 at r = 2
    theirs = core_jacobian(disk.apply, inputs, {"radius"}, {"area"})
    ours = tess_ad.finite_difference_jacobian(disk.apply, inputs, {"radius"}, {"area"})
    np.testing.assert_allclose(theirs["area"]["radius"], expected, rtol=1e-5)
    np.testing.assert_allclose(ours["area"]["radius"], expected, rtol=1e-8)
    ct = {"area": np.array([1.0, -0.5])}
    vjp = tess_ad.finite_difference_vjp(disk.apply, inputs, {"radius"}, {"area"}, ct)
    np.testing.assert_allclose(vjp["radius"], ct["area"] @ expected, rtol=1e-8)
    t = {"radius": np.array([0.5, 2.0])}
    jvp = tess_ad.finite_difference_jvp(disk.apply, inputs, {"radius"}, {"area"}, t)
    np.testing.assert_allclose(jvp["area"], expected @ t["radius"], rtol=1e-8)


@pytest.mark.parametrize("helper", ["tesseract-core", "tess_ad"])
def test_a_validator_rejects_a_perturbed_point_as_in_tesseract_core(disk, helper):
    """The step crosses ``max_radius``: the perturbed point is invalid, in both helpers."""
    inputs = disk.InputSchema.model_validate(
        {"radius": [9.9999995], "max_radius": 10.0}
    )
    fd = (
        core_jacobian
        if helper == "tesseract-core"
        else tess_ad.finite_difference_jacobian
    )
    with pytest.raises(ValidationError, match=re.escape("below max_radius=10.0")):
        fd(disk.apply, inputs, {"radius"}, {"area"}, eps=1e-3)


def test_a_tesseract_with_a_deriving_validator_end_to_end(local_tesseract):
    """Through the in-process client: its drop-in endpoints and the client-side proxy agree."""
    client = local_tesseract("disk_area")
    inputs = {"radius": np.array([1.0, 2.0])}
    expected = np.diag(2.0 * np.pi * inputs["radius"])
    served = client.jacobian(inputs, ["radius"], ["area"])
    np.testing.assert_allclose(served["area"]["radius"], expected, rtol=1e-8)
    proxy = tess_ad.with_finite_differences(client)
    via_apply = proxy.jacobian(inputs, ["radius"], ["area"])
    np.testing.assert_allclose(via_apply["area"]["radius"], expected, rtol=1e-8)


def test_served_meshstats_uses_the_dropin(served_tesseract):
    t = served_tesseract("meshstats_fd")
    inputs = example_inputs("meshstats_fd")
    points = np.asarray(inputs["mesh"]["points"])
    for algorithm in ("central", "forward"):
        jac = t.jacobian(
            {**inputs, "fd_algorithm": algorithm}, ["mesh.points"], sorted(OUTS)
        )
        assert_trees_close(jac, linear_jacobians(points), rtol=1e-6, atol=1e-6)


def test_bad_paths(mesh):
    _api, inputs, apply, _calls = mesh
    with pytest.raises(ValueError, match=re.escape("'mesh.nope'")):
        tess_ad.finite_difference_jacobian(apply, inputs, {"mesh.nope"}, OUTS)
    with pytest.raises(ValueError, match=re.escape("'mesh.n_points'")):
        tess_ad.finite_difference_jacobian(apply, inputs, {"mesh.n_points"}, OUTS)
    with pytest.raises(ValueError, match=re.escape("'statistics.median'")):
        tess_ad.finite_difference_jacobian(
            apply, inputs, {"mesh.points"}, {"statistics.median"}
        )
    with pytest.raises(ValueError, match="'sideways'"):
        tess_ad.finite_difference_jacobian(
            apply, inputs, {"mesh.points"}, OUTS, algorithm="sideways"
        )


class _TwoInputs(BaseModel):
    a: Differentiable[Array[(None,), Float64]]
    b: Differentiable[Array[(None,), Float64]]


class _OneOutput(BaseModel):
    y: Differentiable[Array[(None,), Float64]]


@pytest.mark.parametrize(
    ("algorithm", "n_calls", "rtol"), [("central", 4, 1e-8), ("forward", 3, 1e-5)]
)
def test_jvp_with_a_step_per_path_as_tesseract_core(algorithm, n_calls, rtol):
    """An eps mapping with different steps: paths are grouped by step, as tesseract-core does.

    y = sin(a) * b**3, so J t = cos(a) b^3 t_a + 3 sin(a) b^2 t_b.
    """
    calls = {"n": 0}

    def apply(inp):
        calls["n"] += 1
        return _OneOutput(y=np.sin(inp.a) * inp.b**3)

    inputs = _TwoInputs(a=np.array([0.3, -1.2, 2.0]), b=np.array([1.5, -0.7, 0.2]))
    t = {"a": np.array([1.0, -0.5, 2.0]), "b": np.array([0.3, 1.0, -1.0])}
    want = (
        np.cos(inputs.a) * inputs.b**3 * t["a"]
        + 3 * np.sin(inputs.a) * inputs.b**2 * t["b"]
    )
    eps = {"a": 1e-5, "b": 1e-6} if algorithm == "central" else {"a": 1e-8, "b": 1e-9}
    args = (apply, inputs, {"a", "b"}, {"y"}, t)
    ours = tess_ad.finite_difference_jvp(*args, algorithm=algorithm, eps=eps)
    assert calls["n"] == n_calls  # per group: 2 (central), or 1 + the shared base
    calls["n"] = 0
    theirs = core_jvp(*args, algorithm=algorithm, eps=eps)
    assert calls["n"] == n_calls
    np.testing.assert_allclose(ours["y"], want, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ours["y"], theirs["y"], rtol=rtol, atol=rtol)
    # a mapping may leave paths out (tesseract-core's must name them all): those are scale-aware
    calls["n"] = 0
    part = tess_ad.finite_difference_jvp(
        *args, algorithm=algorithm, eps={"a": eps["a"]}
    )
    assert calls["n"] == n_calls
    np.testing.assert_allclose(part["y"], want, rtol=rtol, atol=rtol)


SEQUENCE_API = (
    Path(__file__).parent
    / "jax_adapter"
    / "tesseracts"
    / "sequence"
    / "tesseract_api.py"
)


def sequence_gradients(items, shift):
    """d total / d (items[i], shift) of the sequence Tesseract (weight 1)."""
    grads = [2.0 * (i + 1) * (x + shift) for i, x in enumerate(items)]
    return grads, sum(np.sum(g) for g in grads)


def test_the_arrays_of_a_lazy_sequence_are_differentiated():
    """``items: LazySequence[Differentiable[Array]]`` (``list[...] | str``): leaves ``items.[i]``."""
    api = load_module_from_path(SEQUENCE_API)
    items = [np.array([1.0, 2.0]), np.array([3.0])]
    inputs = api.InputSchema.model_validate({"items": items, "shift": 0.5})
    ins = {"items.[0]", "items.[1]", "shift"}
    jac = tess_ad.finite_difference_jacobian(api.apply, inputs, ins, {"total"})
    grads, d_shift = sequence_gradients(items, 0.5)
    np.testing.assert_allclose(jac["total"]["items.[0]"], grads[0], rtol=1e-8)
    np.testing.assert_allclose(jac["total"]["items.[1]"], grads[1], rtol=1e-8)
    np.testing.assert_allclose(jac["total"]["shift"], d_shift, rtol=1e-8)
    theirs = core_jacobian(api.apply, inputs, ins, {"total"})
    assert_trees_close(jac, theirs, rtol=1e-6)
