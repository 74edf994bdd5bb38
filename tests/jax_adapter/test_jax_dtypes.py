"""Dtypes follow the schema; jax_enable_x64 off casts float64 outputs to float32 (documented)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import example_api

from tess_ad.jax import apply_tesseract

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_float64_input_to_float32_tesseract(local_tesseract, mode):
    client = local_tesseract("float32")
    shift = np.zeros(3, np.float32)

    def energy(x):
        return apply_tesseract(client, {"x": x, "w": np.float32(1.5), "shift": shift})[
            "energy"
        ]

    x64 = jnp.array([0.1, 0.7, -1.3], jnp.float64)
    fn = (
        jax.jit(jax.value_and_grad(energy))
        if mode == "jit"
        else jax.value_and_grad(energy)
    )
    value, grad = fn(x64)
    assert value.dtype == jnp.float32  # the Tesseract computes in float32
    assert grad.dtype == jnp.float64  # the gradient has the argument's dtype
    value32, grad32 = jax.value_and_grad(energy)(x64.astype(jnp.float32))
    assert float(value) == float(value32)
    np.testing.assert_array_equal(grad, grad32.astype(jnp.float64))


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_float32_input_to_float64_tesseract(local_tesseract, mode):
    client = local_tesseract("rosenbrock")
    f = lambda x: apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})  # noqa: E731
    out = (jax.jit(f) if mode == "jit" else f)(jnp.array([0.5, 1.5], jnp.float32))
    assert out["loss"].dtype == out["residuals"].dtype == jnp.float64


def test_x64_disabled_casts_float64_outputs_to_float32():
    script = textwrap.dedent(
        f"""
        import warnings
        warnings.simplefilter("error")
        import jax, jax.numpy as jnp, numpy as np
        from tesseract_core import Tesseract
        from tess_ad.jax import apply_tesseract
        assert not jax.config.jax_enable_x64
        t = Tesseract.from_tesseract_api({str(example_api("rosenbrock"))!r})
        f = lambda x: apply_tesseract(t, {{"x": x, "a": 1.0, "b": 100.0}})["loss"]
        x = np.array([-1.2, 1.0, 0.5, 2.0])
        for fn in (f, jax.jit(f)):
            assert fn(x).dtype == jnp.float32 and float(fn(x)) == np.float32(355.7)
        for g in (jax.grad(f), jax.jit(jax.grad(f))):
            grad = g(jnp.asarray(x))
            assert grad.dtype == jnp.float32
            np.testing.assert_allclose(grad, [-215.6, 112.0, -451.0, 350.0], rtol=1e-6)
        print("ok")
        """
    )
    env = dict(os.environ, JAX_ENABLE_X64="0")
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.getcwd(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_import_tess_ad_does_not_load_jax():
    script = "import sys, tess_ad; assert 'jax' not in sys.modules, 'jax imported'; import tess_ad.jax; assert 'jax' in sys.modules; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
