"""The finite-difference estimators of ``tess_ad._fd`` on plain NumPy functions.

No Tesseract here: plans are evaluated by a tiny loop so the tests see exactly
what the estimators ask for and how they combine it.
"""

import numpy as np
import pytest

from tess_ad._fd import (
    FDNonFiniteError,
    directional_step,
    jacobian_plan,
    jvp_plan,
    resolve_steps,
    vjp_plan,
)


def f(v):
    """Two outputs of two inputs, with analytic Jacobian below."""
    a, b = v["a"], v["b"]
    return {"u": np.sin(a) * b[0], "s": np.sum(a**2) + b[0] * b[1] ** 3}


def jac_f(x):
    a, b = x["a"], x["b"]
    return {
        "u": {
            "a": np.diag(np.cos(a) * b[0]),
            "b": np.stack([np.sin(a), np.zeros_like(a)], axis=-1),
        },
        "s": {"a": 2 * a, "b": np.array([b[1] ** 3, 3 * b[0] * b[1] ** 2])},
    }


X = {"a": np.array([0.3, -1.2, 2.0]), "b": np.array([1.5, -0.7])}


def run(plan, fun=f, base=X):
    calls = 0
    for k in range(plan.size):
        point = {**base, **plan.point(k)}
        calls += 1
        plan.accumulate(k, fun(point))
    return plan.result(), calls


@pytest.mark.parametrize(
    ("method", "rtol", "calls"), [("central", 1e-9, 10), ("forward", 1e-6, 6)]
)
def test_jacobian_matches_analytic_with_minimal_calls(method, rtol, calls):
    steps = resolve_steps(X, method)
    got, n_calls = run(jacobian_plan(X, steps, ["u", "s"], method=method))
    assert (
        n_calls == calls
    )  # 2n central, n + 1 forward (n = 5 elements), both outputs at once
    want = jac_f(X)
    for o in want:
        for p in want[o]:
            np.testing.assert_allclose(
                got[o][p], want[o][p], rtol=rtol, atol=rtol, err_msg=f"{o} / {p}"
            )


@pytest.mark.parametrize(
    ("method", "rtol", "calls"), [("central", 1e-9, 10), ("forward", 1e-6, 6)]
)
def test_vjp_matches_analytic(method, rtol, calls):
    ct = {"u": np.array([1.0, -2.0, 0.5]), "s": np.array(3.0)}
    got, n_calls = run(vjp_plan(X, resolve_steps(X, method), ct, method=method))
    assert n_calls == calls
    J = jac_f(X)
    for p in X:
        want = ct["u"] @ J["u"][p] + ct["s"] * J["s"][p]
        np.testing.assert_allclose(got[p], want, rtol=rtol, atol=rtol, err_msg=p)


@pytest.mark.parametrize(
    ("method", "calls", "rtol"),
    [("central", 2, 1e-8), ("forward", 2, 1e-6), ("stochastic", 2, 1e-8)],
)
def test_jvp_is_one_directional_difference(method, calls, rtol):
    t = {"a": np.array([0.2, 1.0, -0.4]), "b": np.array([0.0, 2.0])}
    got, n_calls = run(jvp_plan(X, t, ["u", "s"], method=method))
    assert n_calls == calls
    J = jac_f(X)
    for o in J:
        want = sum(np.tensordot(J[o][p], t[p], axes=1) for p in X)
        np.testing.assert_allclose(got[o], want, rtol=rtol, err_msg=o)


def test_spsa_costs_two_per_sample_and_is_unbiased():
    """Averaged over seeds the SPSA Jacobian converges to the true one.

    Probabilistic in principle, deterministic in practice (seeds 0..399 are
    fixed): for an unbiased estimator each element's mean error is about
    normal with the standard error std/sqrt(400), so |z| < 4 on all 12
    elements fails with probability ~1e-3 for a correct implementation; a
    bias as small as a fifth of the per-estimate noise would fail it.
    """
    x = {"a": np.linspace(-1, 1, 12)}
    g = lambda v: {"s": np.sum(np.sin(v["a"]) * np.arange(1, 13))}  # noqa: E731
    want = np.cos(x["a"]) * np.arange(1, 13)
    steps = resolve_steps(x, "stochastic")
    ests = []
    for seed in range(400):
        est, calls = run(
            jacobian_plan(
                x, steps, ["s"], method="stochastic", num_samples=3, seed=seed
            ),
            g,
            x,
        )
        assert calls == 6  # 2 per sample, not 2n = 24
        ests.append(est["s"]["a"])
    ests = np.array(ests)
    assert np.mean(np.abs(ests[0] - want)) > 1.0  # one estimate is noisy...
    z = (ests.mean(axis=0) - want) / (ests.std(axis=0, ddof=1) / np.sqrt(len(ests)))
    assert np.max(np.abs(z)) < 4.0, z  # ...the average is centred on the truth
    # same seed, same estimate
    again, _ = run(
        jacobian_plan(x, steps, ["s"], method="stochastic", num_samples=3, seed=7), g, x
    )
    np.testing.assert_array_equal(again["s"]["a"], ests[7])


def test_spsa_with_many_samples_uses_central():
    steps = resolve_steps(X, "stochastic")
    got, calls = run(
        jacobian_plan(X, steps, ["s"], method="stochastic", num_samples=50)
    )
    assert calls == 10
    np.testing.assert_allclose(got["s"]["a"], jac_f(X)["s"]["a"], rtol=1e-9)


def test_scale_aware_steps_follow_magnitude_and_dtype():
    x = {
        "v": np.array([1e6, 1.0, 1e-6, 0.0]),
        "w": np.array([0.0, 0.0], dtype=np.float32),
    }
    c = resolve_steps(x, "central", dtypes={"w": np.float32})
    np.testing.assert_allclose(
        c["v"][:3] / np.array([1e6, 1.0, 1e-6]), np.finfo(float).eps ** (1 / 3)
    )
    assert c["v"][3] == pytest.approx(
        np.finfo(float).eps ** (1 / 3) * 1.0
    )  # median of non-zeros = 1
    np.testing.assert_allclose(c["w"], float(np.finfo(np.float32).eps) ** (1 / 3))
    fwd = resolve_steps(x, "forward")
    assert fwd["v"][1] == pytest.approx(np.sqrt(np.finfo(float).eps))
    spsa = resolve_steps(x, "stochastic")  # one step per leaf: c * RMS magnitude
    rms = np.sqrt(np.mean(x["v"] ** 2))
    np.testing.assert_allclose(spsa["v"], np.finfo(float).eps ** (1 / 3) * rms)


@pytest.mark.parametrize(
    ("eps", "match"),
    [
        (0.0, "positive"),
        (-1e-3, "positive"),
        (float("nan"), "positive"),
        ({"nope": 1e-3}, "'nope'"),
        ("big", "number"),
    ],
)
def test_bad_steps_are_refused(eps, match):
    with pytest.raises((ValueError, TypeError), match=match):
        resolve_steps(X, "central", eps)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="'backward'"):
        resolve_steps(X, "backward")


@pytest.mark.parametrize("num_samples", [0, -3, 2.5, True])
def test_bad_num_samples(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        jacobian_plan(
            X,
            resolve_steps(X, "stochastic"),
            ["s"],
            method="stochastic",
            num_samples=num_samples,
        )


def test_absolute_eps_mapping_for_some_paths():
    steps = resolve_steps(X, "central", {"a": 1e-3})
    np.testing.assert_array_equal(steps["a"], np.full(3, 1e-3))
    np.testing.assert_allclose(
        steps["b"], np.abs(X["b"]) * np.finfo(float).eps ** (1 / 3)
    )


def test_non_finite_output_names_output_and_input():
    def g(v):
        with np.errstate(invalid="ignore"):
            return {"r": np.sqrt(v["a"])}  # NaN once a[1] goes below zero

    x = {"a": np.array([1.0, 0.0])}
    plan = jacobian_plan(x, resolve_steps(x, "central", 1e-3), ["r"])
    with pytest.raises(FDNonFiniteError, match=r"output 'r'.*input 'a' element \[1\]"):
        run(plan, g, x)


def test_directional_step():
    x = {"a": np.array([1e3, 2e3]), "b": np.array([5.0])}
    assert directional_step(x, {"a": np.zeros(2)}) == 0.0
    h = directional_step(x, {"a": np.array([1.0, 0.0])})
    assert h == pytest.approx(np.finfo(float).eps ** (1 / 3) * 1e3)


@pytest.mark.parametrize(
    ("method", "eps", "calls", "rtol"),
    [
        ("central", {"a": 1e-5, "b": 1e-6}, 4, 1e-8),  # two groups, 2 each
        ("central", {"a": 1e-5}, 4, 1e-8),  # 'b' left scale-aware: its own group
        ("central", {"a": 1e-5, "b": 1e-5}, 2, 1e-8),  # one shared step: one group
        ("forward", {"a": 1e-8, "b": 1e-9}, 3, 1e-5),  # 1 per group + the shared base
    ],
)
def test_jvp_groups_paths_by_step(method, eps, calls, rtol):
    t = {"a": np.array([0.2, 1.0, -0.4]), "b": np.array([0.5, 2.0])}
    got, n_calls = run(jvp_plan(X, t, ["u", "s"], method=method, eps=eps))
    assert n_calls == calls
    J = jac_f(X)
    for o in J:
        want = sum(np.tensordot(J[o][p], t[p], axes=1) for p in X)
        np.testing.assert_allclose(got[o], want, rtol=rtol, atol=rtol, err_msg=o)


def test_jvp_eps_naming_an_unknown_path():
    t = {"a": np.ones(3), "b": np.ones(2)}
    with pytest.raises(ValueError, match="'c'"):
        jvp_plan(X, t, ["u"], eps={"c": 1e-3})
