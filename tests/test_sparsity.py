"""tess_ad._sparsity: coloured finite differences on a stencil, patterns derived and checked.

``tests/tesseracts/stencil`` has a tridiagonal Jacobian (``du``) and a dense
row (``energy``); every number is compared with the analytic Jacobian, and
apply calls are counted with a spy on the real client.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import Spy, example_api
from tesseract_core.runtime.core import load_module_from_path

import tess_ad
from tess_ad._sparsity import colour


def analytic(u):
    n = u.size
    jac = np.diag(u**2 - 2.0) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    return {"du": {"u": jac}, "energy": {"u": u.copy()}}


def pattern(n, energy=True):
    band = (
        np.eye(n, dtype=bool) | np.eye(n, k=1, dtype=bool) | np.eye(n, k=-1, dtype=bool)
    )
    out = {"du": {"u": band}}
    if energy:
        out["energy"] = {"u": np.ones(n, bool)}
    return out


@pytest.fixture(scope="module")
def stencil(local_tesseract):
    return local_tesseract("stencil")


def test_a_tridiagonal_pattern_takes_three_colours_at_any_size():
    for n in (3, 10, 1000):
        groups = colour(
            pattern(n, energy=False), [("u", (i,)) for i in range(n)], {"u": (n,)}
        )
        assert len(groups) == 3
        assert sorted(j for g in groups for j in g) == list(range(n))


@pytest.mark.parametrize(
    ("method", "calls"), [("central", 6), ("forward", 4), ("richardson", 12)]
)
def test_a_coloured_jacobian_of_a_stencil(stencil, method, calls):
    """n = 1,000 with the tridiagonal pattern alone: 2 x 3 calls (central), not 2,000."""
    u = np.linspace(-1.0, 1.0, 1000)
    fd = tess_ad.with_finite_differences(
        stencil, method=method, sparsity=pattern(1000, energy=False)
    )
    with Spy(stencil) as spy:
        jac = fd.jacobian({"u": u}, ["u"], ["du"])
    assert spy.calls["apply"] == calls
    rtol = {"central": 1e-8, "forward": 1e-5, "richardson": 1e-10}[method]
    np.testing.assert_allclose(
        jac["du"]["u"], analytic(u)["du"]["u"], rtol=rtol, atol=rtol
    )


def test_a_dense_row_takes_every_element_apart(stencil):
    """``energy`` depends on every input: no two columns may move together."""
    u = np.linspace(-1.0, 1.0, 8)
    fd = tess_ad.with_finite_differences(stencil, sparsity=pattern(8))
    with Spy(stencil) as spy:
        jac = fd.jacobian({"u": u}, ["u"], ["du", "energy"])
    assert spy.calls["apply"] == 16
    for o in ("du", "energy"):
        np.testing.assert_allclose(
            jac[o]["u"], analytic(u)[o]["u"], rtol=1e-8, atol=1e-8
        )


def test_a_coloured_vjp_and_its_error_estimate(stencil):
    u = np.linspace(-1.0, 1.0, 50)
    ct = np.cos(np.arange(50.0))
    fd = tess_ad.with_finite_differences(stencil, sparsity=pattern(50, energy=False))
    with Spy(stencil) as spy:
        vjp = fd.vector_jacobian_product({"u": u}, ["u"], ["du"], {"du": ct})
    assert spy.calls["apply"] == 6
    expected = ct @ analytic(u)["du"]["u"]
    np.testing.assert_allclose(vjp["u"], expected, rtol=1e-8, atol=1e-8)
    with Spy(stencil) as spy:
        vjp, err = fd.vector_jacobian_product_with_error(
            {"u": u}, ["u"], ["du"], {"du": ct}
        )
    assert spy.calls["apply"] == 12
    assert np.all(err["u"] >= np.abs(vjp["u"] - expected))
    jac, err = fd.jacobian_with_error({"u": u}, ["u"], ["du"])
    truth = analytic(u)["du"]["u"]
    assert np.all(err["du"]["u"] >= np.abs(jac["du"]["u"] - truth))
    assert np.all(err["du"]["u"][~pattern(50)["du"]["u"]] == 0.0)  # zero by the pattern


def test_a_missing_pair_is_all_zero(stencil):
    u = np.linspace(-1.0, 1.0, 6)
    fd = tess_ad.with_finite_differences(stencil, sparsity=pattern(6, energy=False))
    jac = fd.jacobian({"u": u}, ["u"], ["du", "energy"])
    np.testing.assert_array_equal(jac["energy"]["u"], np.zeros(6))


def test_the_pattern_is_derived_from_finite_differences_and_checked(stencil):
    u = np.linspace(-1.0, 1.0, 12)
    derived = tess_ad.jacobian_sparsity(stencil, {"u": u}, ["u"], ["du", "energy"])
    np.testing.assert_array_equal(derived["du"]["u"], pattern(12)["du"]["u"])
    np.testing.assert_array_equal(derived["energy"]["u"], np.ones(12, bool))
    dense = tess_ad.with_finite_differences(stencil).jacobian(
        {"u": u}, ["u"], ["du", "energy"]
    )
    tess_ad.check_sparsity(derived, dense)
    wrong = {"du": {"u": np.eye(12, dtype=bool)}, "energy": derived["energy"]}
    with pytest.raises(ValueError, match=re.escape("ddu/du at [0, 1]")):
        tess_ad.check_sparsity(wrong, dense)


def test_the_pattern_comes_from_the_jacobian_endpoint_when_there_is_one(
    local_tesseract,
):
    client = local_tesseract("rosenbrock")
    x = np.array([0.5, -1.0, 2.0, 1.5])
    with Spy(client) as spy:
        derived = tess_ad.jacobian_sparsity(
            client, {"x": x, "a": 1.0, "b": 100.0}, ["x"], ["residuals"]
        )
    assert spy.calls["jacobian"] == 1 and spy.calls["apply"] == 0
    expected = np.zeros((6, 4), bool)
    for i in range(3):
        expected[i, i] = expected[3 + i, i] = expected[3 + i, i + 1] = True
    np.testing.assert_array_equal(derived["residuals"]["x"], expected)


def test_bad_patterns_are_refused_naming_the_pair(stencil):
    with pytest.raises(
        ValueError, match=re.escape("sparsity['du']['u'] must be a bool array")
    ):
        tess_ad.with_finite_differences(
            stencil, sparsity={"du": {"u": np.ones((4, 4))}}
        )
    fd = tess_ad.with_finite_differences(
        stencil, sparsity={"du": {"u": np.ones((4, 5), bool)}}
    )
    with (
        Spy(stencil) as spy,
        pytest.raises(
            ValueError, match=re.escape("sparsity['du']['u'] has shape (4, 5)")
        ),
    ):
        fd.jacobian({"u": np.ones(4)}, ["u"], ["du"])
    assert spy.calls["apply"] == 0
    fd = tess_ad.with_finite_differences(
        stencil, sparsity={"du": {"u": np.ones((3, 4), bool)}}
    )
    with pytest.raises(ValueError, match=re.escape("the output has shape (4,)")):
        fd.jacobian({"u": np.ones(4)}, ["u"], ["du"])


def test_the_drop_in_helpers_take_a_pattern():
    api = load_module_from_path(example_api("stencil"))
    u = np.linspace(-1.0, 1.0, 30)
    inputs = api.InputSchema.model_validate({"u": u})
    calls = {"n": 0}

    def apply(inp):
        calls["n"] += 1
        return api.apply(inp)

    jac = tess_ad.finite_difference_jacobian(
        apply, inputs, {"u"}, {"du"}, sparsity=pattern(30, energy=False)
    )
    assert calls["n"] == 6
    np.testing.assert_allclose(
        jac["du"]["u"], analytic(u)["du"]["u"], rtol=1e-8, atol=1e-8
    )
