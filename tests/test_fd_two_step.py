"""tess_ad._fd_two_step: Richardson extrapolation and error estimates, on real Tesseracts.

The estimates are judged against analytic derivatives (the same formulas in
``jax.numpy``): on ``tests/tesseracts/smooth`` (dense Jacobians, magnitudes
from 1e-3 to 1e3, float64 and float32) an estimate must bound the true error
in at least 99% of the entries and be within 100x of it in the median; on
``examples/float32`` with outputs near 2e3 (a correct float32 Tesseract whose
FD reference is noisier than a fixed tolerance of 2.4e-3) it must explain
the noise. Call counts come from a spy on the real client.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Spy

import tess_ad

jax = pytest.importorskip("jax")
jnp = jax.numpy

METHODS = ["central", "richardson", "forward"]


def smooth_ref(x, scale):
    u = x * scale
    return (
        jnp.exp(0.3 * u) * jnp.sin(jnp.roll(u, -1))
        + u**3 / 50
        + jnp.log1p(u * u) * jnp.cos(jnp.roll(u, 1))
    )


def smooth_cases(dtype):
    """Points and scales that put the outputs at magnitudes 1e-3 to 1e3."""
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 3.0):
        for _ in range(3):
            x = rng.uniform(-2.0, 2.0, 6) / max(scale, 1.0)
            yield x.astype(dtype), scale


def true_jacobian(x, scale):
    x64 = jnp.asarray(np.asarray(x, dtype=np.float64))
    return np.asarray(jax.jacfwd(lambda v: smooth_ref(v, scale))(x64))


def inputs_for(x, scale):
    return {"x64": x.astype(np.float64), "x32": x.astype(np.float32), "scale": scale}


def judge(estimates, errors):
    """Fraction of entries bounded, and the median of estimate / true error."""
    estimates = np.concatenate([np.ravel(e) for e in estimates])
    errors = np.concatenate([np.ravel(e) for e in errors])
    bounded = float(np.mean(estimates >= errors))
    nonzero = errors > 0
    return bounded, float(np.median(estimates[nonzero] / errors[nonzero]))


@pytest.fixture(scope="module")
def smooth(local_tesseract):
    return local_tesseract("smooth")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bits", ["64", "32"])
def test_jacobian_error_estimates_bound_the_true_error(smooth, method, bits):
    dtype = np.float64 if bits == "64" else np.float32
    fd = tess_ad.with_finite_differences(smooth, method=method)
    estimates, errors = [], []
    for x, scale in smooth_cases(dtype):
        jac, err = fd.jacobian_with_error(
            inputs_for(x, scale), ["x" + bits], ["y" + bits]
        )
        value = jac["y" + bits]["x" + bits]
        assert value.dtype == dtype and err["y" + bits]["x" + bits].dtype == dtype
        errors.append(np.abs(value.astype(np.float64) - true_jacobian(x, scale)))
        estimates.append(err["y" + bits]["x" + bits].astype(np.float64))
    bounded, median = judge(estimates, errors)
    assert bounded >= 0.99, (
        f"{method} float{bits}: only {bounded:.1%} of entries bounded"
    )
    assert median <= 100.0, (
        f"{method} float{bits}: median estimate / error {median:.0f}"
    )


@pytest.mark.parametrize("method", METHODS)
def test_vjp_and_jvp_error_estimates_bound_the_true_error(smooth, method):
    fd = tess_ad.with_finite_differences(smooth, method=method)
    rng = np.random.default_rng(1)
    vjp_est, vjp_err, jvp_est, jvp_err = [], [], [], []
    for x, scale in smooth_cases(np.float64):
        inputs = inputs_for(x, scale)
        jac = true_jacobian(x, scale)
        ct = rng.standard_normal(6)
        t = rng.standard_normal(6)
        vjp, err = fd.vector_jacobian_product_with_error(
            inputs, ["x64"], ["y64"], {"y64": ct}
        )
        vjp_err.append(np.abs(vjp["x64"] - ct @ jac))
        vjp_est.append(err["x64"])
        jvp, err = fd.jacobian_vector_product_with_error(
            inputs, ["x64"], ["y64"], {"x64": t}
        )
        jvp_err.append(np.abs(jvp["y64"] - jac @ t))
        jvp_est.append(err["y64"])
    for what, est, err in (("VJP", vjp_est, vjp_err), ("JVP", jvp_est, jvp_err)):
        bounded, median = judge(est, err)
        assert bounded >= 0.99, f"{method} {what}: only {bounded:.1%} bounded"
        assert median <= 100.0, f"{method} {what}: median ratio {median:.0f}"


def test_richardson_is_more_accurate_than_central_in_float64(smooth):
    worst = {}
    for method in ("central", "richardson"):
        fd = tess_ad.with_finite_differences(smooth, method=method)
        worst[method] = max(
            np.max(
                np.abs(
                    fd.jacobian(inputs_for(x, s), ["x64"], ["y64"])["y64"]["x64"]
                    - true_jacobian(x, s)
                )
            )
            / np.max(np.abs(true_jacobian(x, s)))
            for x, s in smooth_cases(np.float64)
        )
    assert worst["richardson"] < worst["central"] / 10, worst
    assert worst["richardson"] < 1e-10


def test_a_correct_float32_tesseract_with_large_outputs_is_explained(local_tesseract):
    """Outputs near 2e3 in float32: the FD reference is off by more than 2.4e-3
    relative (the old fixed tolerance), and the estimate says so, entry by entry."""
    client = local_tesseract("float32")
    x = np.array([0.1, 0.7, -1.3], np.float32)
    shift = np.array([2000.0, -1500.0, 2500.0], np.float32)
    inputs = {"x": x, "w": 1.5, "shift": shift}
    x64 = x.astype(np.float64)
    y = 1.5 * np.sin(x64) + shift
    true = {"y": np.diag(1.5 * np.cos(x64)), "energy": y * 1.5 * np.cos(x64)}
    fd = tess_ad.with_finite_differences(client)
    jac, err = fd.jacobian_with_error(inputs, ["x"], ["y", "energy"])
    relative = max(
        np.max(np.abs(jac[o]["x"] - true[o])) / np.max(np.abs(true[o])) for o in true
    )
    assert relative > 2.4e-3  # the noise a fixed tolerance mistook for a wrong gradient
    for o in true:
        assert np.all(err[o]["x"] >= np.abs(jac[o]["x"] - true[o])), o
    # the same Jacobian as without the estimate: its value is the plain central difference
    plain = fd.jacobian(inputs, ["x"], ["y", "energy"])
    for o in true:
        np.testing.assert_array_equal(plain[o]["x"], jac[o]["x"])


@pytest.mark.parametrize("method", METHODS)
def test_float32_inputs_behind_a_float64_output_are_explained(local_tesseract, method):
    """tesseract-core's vectoradd pattern: float32 arithmetic, a Float64 output.

    The outputs arrive as float64 but carry float32 round-off; the estimate
    takes the moved input's precision as its floor, so it bounds the true
    error (about 2e-5 relative, not the 1e-12 a float64 output suggests) and
    stays small enough to catch a 1% error (forward differences, whose error
    in float32 is about sqrt(eps) = 3.5e-4 and whose estimate is conservative
    like the others, a 10% one)."""
    from pathlib import Path

    client = local_tesseract(Path(__file__).parent / "tesseracts" / "float32_inside")
    a = np.array([1.0, 2.0, 3.0, -0.7], np.float32)
    b = np.array([4.0, 5.0, 6.0, 0.3], np.float32)
    inputs = {"a": a, "b": b, "s": 1.0}
    true = {"a": np.eye(4), "b": np.eye(4), "s": a.astype(np.float64)}
    fd = tess_ad.with_finite_differences(client, method=method)
    jac, err = fd.jacobian_with_error(inputs, ["a", "b", "s"], ["result"])
    off = max(np.max(np.abs(jac["result"][p] - true[p])) for p in true)
    assert off > 1e-6  # the float32 round-off is there to explain
    for p in true:
        assert np.all(err["result"][p] >= np.abs(jac["result"][p] - true[p])), p
        assert np.max(err["result"][p]) < (0.1 if method == "forward" else 1e-2), p


@pytest.mark.parametrize(
    ("method", "with_error", "calls"),
    [
        ("richardson", False, lambda n: 4 * n),
        ("richardson", True, lambda n: 4 * n),
        ("central", True, lambda n: 4 * n),
        ("forward", True, lambda n: 2 * n + 1),
    ],
)
def test_call_counts(smooth, method, with_error, calls):
    fd = tess_ad.with_finite_differences(smooth, method=method)
    inputs = inputs_for(np.linspace(-1.0, 1.0, 6), 1.0)
    jacobian = fd.jacobian_with_error if with_error else fd.jacobian
    vjp = (
        fd.vector_jacobian_product_with_error
        if with_error
        else fd.vector_jacobian_product
    )
    jvp = (
        fd.jacobian_vector_product_with_error
        if with_error
        else fd.jacobian_vector_product
    )
    with Spy(smooth) as spy:
        jacobian(inputs, ["x64"], ["y64", "y32"])
    assert spy.calls["apply"] == calls(6)
    with Spy(smooth) as spy:
        vjp(inputs, ["x64", "x32"], ["y64"], {"y64": np.ones(6)})
    assert spy.calls["apply"] == calls(12)
    with Spy(smooth) as spy:
        jvp(inputs, ["x64"], ["y64"], {"x64": np.ones(6)})
    assert spy.calls["apply"] == (3 if method == "forward" else 4)


def test_spsa_error_estimates_come_from_the_spread_of_the_samples(smooth):
    """SPSA takes no two steps: its error is a t-quantile of standard errors over the samples."""
    fd = tess_ad.with_finite_differences(
        smooth, method="stochastic", num_samples=20, seed=1
    )
    rng = np.random.default_rng(3)
    est, err, vjp_est, vjp_err = [], [], [], []
    for _ in range(6):
        x = rng.uniform(-1.0, 1.0, 48)
        inputs, jac = inputs_for(x, 1.0), true_jacobian(x, 1.0)
        with Spy(smooth) as spy:
            value, error = fd.jacobian_with_error(inputs, ["x64"], ["y64"])
        assert spy.calls["apply"] == 2 * 20  # no extra evaluation for the estimate
        err.append(np.abs(value["y64"]["x64"] - jac))
        est.append(error["y64"]["x64"])
        ct = rng.standard_normal(48)
        value, error = fd.vector_jacobian_product_with_error(
            inputs, ["x64"], ["y64"], {"y64": ct}
        )
        vjp_err.append(np.abs(value["x64"] - ct @ jac))
        vjp_est.append(error["x64"])
        plain = fd.jacobian(inputs, ["x64"], ["y64"])  # the same estimate, seeded
        with_error = fd.jacobian_with_error(inputs, ["x64"], ["y64"])[0]
        np.testing.assert_array_equal(plain["y64"]["x64"], with_error["y64"]["x64"])
    for what, e, t in (("jacobian", est, err), ("VJP", vjp_est, vjp_err)):
        bounded, median = judge(e, t)
        assert bounded >= 0.99, f"SPSA {what}: only {bounded:.1%} bounded"
        assert median <= 100.0, f"SPSA {what}: median ratio {median:.0f}"


def test_the_drop_in_helpers_take_richardson(local_tesseract):
    from helpers import example_api
    from tesseract_core.runtime.core import load_module_from_path

    api = load_module_from_path(example_api("smooth"))
    x = np.linspace(-1.0, 1.0, 6)
    inputs = api.InputSchema.model_validate(inputs_for(x, 1.0))
    calls = {"n": 0}

    def apply(inp):
        calls["n"] += 1
        return api.apply(inp)

    jac = tess_ad.finite_difference_jacobian(
        apply, inputs, {"x64"}, {"y64"}, algorithm="richardson"
    )
    assert calls["n"] == 4 * 6
    np.testing.assert_allclose(
        jac["y64"]["x64"], true_jacobian(x, 1.0), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("method", METHODS)
def test_rosenbrock_error_estimates_bound_the_true_error(local_tesseract, method):
    """A polynomial (residuals quadratic in x): truncation vanishes, rounding remains."""
    client = local_tesseract("rosenbrock")
    fd = tess_ad.with_finite_differences(client, method=method)
    rng = np.random.default_rng(2)
    estimates, errors = [], []
    for scale in (1e-2, 1.0, 1e2):
        x = rng.standard_normal(5) * scale
        jac, err = fd.jacobian_with_error(
            {"x": x, "a": 1.0, "b": 100.0}, ["x"], ["residuals", "loss"]
        )
        r = jnp.asarray(x)
        true = jax.jacfwd(
            lambda v: {
                "residuals": jnp.concatenate(
                    [1.0 - v[:-1], 10.0 * (v[1:] - v[:-1] ** 2)]
                ),
                "loss": jnp.sum(
                    jnp.concatenate([1.0 - v[:-1], 10.0 * (v[1:] - v[:-1] ** 2)]) ** 2
                ),
            }
        )(r)
        for o in ("residuals", "loss"):
            errors.append(np.abs(jac[o]["x"] - np.asarray(true[o])))
            estimates.append(err[o]["x"])
    bounded, median = judge(estimates, errors)
    assert bounded >= 0.99, f"{method}: only {bounded:.1%} bounded"
    assert median <= 100.0, f"{method}: median ratio {median:.0f}"
