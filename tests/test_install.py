"""Each adapter works with only its own extra installed; the core needs no runtime.

``bash dev/test.sh`` (which CI runs) builds two fresh virtual environments,
one with ``pip install -e ".[jax]"`` and one with ``pip install -e ".[torch]"``
(no tesseract-core runtime in either, no test tools), and points these tests at
their interpreters through ``TESS_AD_JAX_ONLY_PYTHON`` and
``TESS_AD_TORCH_ONLY_PYTHON``. Each test first checks that the other framework
really is absent there, then differentiates a Tesseract served from this
environment. Without those variables (a plain ``pytest``) they are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, Server, example_api

JAX_ONLY = os.environ.get("TESS_AD_JAX_ONLY_PYTHON")
TORCH_ONLY = os.environ.get("TESS_AD_TORCH_ONLY_PYTHON")

# d/dx of (a - x0)^2 + b (x1 - x0^2)^2 at x = (0.5, 1.5), a = 1, b = 100
EXPECTED_GRADIENT = [-251.0, 250.0]

JAX_SCRIPT = """
import importlib.util, json, sys
present = [m for m in ("torch", "tesseract_torch") if importlib.util.find_spec(m)]
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from tesseract_core import Tesseract
import tess_ad.jax
t = Tesseract.from_url(sys.argv[1])
def loss(x):
    return tess_ad.jax.apply_tesseract(t, {"x": x, "a": 1.0, "b": 100.0})["loss"]
g = jax.jit(jax.grad(loss))(jnp.array([0.5, 1.5]))
try:
    import tess_ad.torch
    other = "imported"
except ImportError as exc:
    other = str(exc)
print(json.dumps({"present": present, "grad": g.tolist(), "dtype": str(g.dtype), "other": other}))
"""

TORCH_SCRIPT = """
import importlib.util, json, sys
present = [m for m in ("jax", "jaxlib", "equinox", "tesseract_jax") if importlib.util.find_spec(m)]
import torch
from tesseract_core import Tesseract
import tess_ad.torch
t = Tesseract.from_url(sys.argv[1])
x = torch.tensor([0.5, 1.5], dtype=torch.float64, requires_grad=True)
tess_ad.torch.apply_tesseract(t, {"x": x, "a": 1.0, "b": 100.0})["loss"].backward()
try:
    import tess_ad.jax
    other = "imported"
except ImportError as exc:
    other = str(exc)
print(json.dumps({"present": present, "grad": x.grad.tolist(), "dtype": str(x.grad.dtype), "other": other}))
"""


def _run(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(scope="module")
def rosenbrock_url():
    server = Server(example_api("rosenbrock")).start()
    yield server.url
    server.stop()


@pytest.mark.skipif(
    not JAX_ONLY, reason="TESS_AD_JAX_ONLY_PYTHON is set by dev/test.sh"
)
def test_jax_adapter_works_without_torch(rosenbrock_url):
    proc = _run(JAX_ONLY, "-c", JAX_SCRIPT, rosenbrock_url)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["present"] == [], "the jax-only environment has torch installed"
    assert result["grad"] == EXPECTED_GRADIENT and result["dtype"] == "float64"
    # the other adapter names the extra that installs its framework
    assert result["other"] == (
        "tess_ad.torch: torch not installed. Install with: pip install 'tess-ad[torch]'"
    )


@pytest.mark.skipif(
    not TORCH_ONLY, reason="TESS_AD_TORCH_ONLY_PYTHON is set by dev/test.sh"
)
def test_torch_adapter_works_without_jax(rosenbrock_url):
    proc = _run(TORCH_ONLY, "-c", TORCH_SCRIPT, rosenbrock_url)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["present"] == [], "the torch-only environment has jax installed"
    assert result["grad"] == EXPECTED_GRADIENT and result["dtype"] == "torch.float64"
    assert result["other"] == (
        "tess_ad.jax: jax and equinox not installed. "
        "Install with: pip install 'tess-ad[jax]'"
    )


@pytest.mark.skipif(
    not JAX_ONLY, reason="TESS_AD_JAX_ONLY_PYTHON is set by dev/test.sh"
)
def test_check_of_a_folder_without_the_runtime_names_the_extra():
    tess_ad_script = Path(JAX_ONLY).parent / "tess-ad"
    proc = _run(str(tess_ad_script), "check", "examples/rosenbrock")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pip install 'tess-ad[runtime]'" in proc.stderr
    assert "missing:" in proc.stderr and "fastapi" in proc.stderr
