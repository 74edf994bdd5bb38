"""A Tesseract client is a leafless JAX pytree, as tesseract-jax registers it.

So ``jax.jit(f)(tesseract, x)`` works, for in-process and served clients and
for tess_ad's wrappers; and ``tesseract_jax`` and ``tess_ad.jax`` can be
imported together in either order (JAX refuses a second registration of one
type, and tesseract-jax registers ``Tesseract`` unconditionally).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import Spy
from jax_adapter_refs import TESSERACTS

import tess_ad
from tess_ad.jax import apply_tesseract

API = TESSERACTS / "metadata" / "tesseract_api.py"
X = jnp.array([1.0, 2.0, 3.0])
Y = jnp.array([-0.5, 4.0, 0.25])

CHECK = """
import sys
{before}
import jax, jax.numpy as jnp
from tesseract_core import Tesseract
import tess_ad
from tess_ad.jax import apply_tesseract

t = Tesseract.from_tesseract_api({api!r})
assert jax.tree.leaves(t) == [], jax.tree.leaves(t)
fd = tess_ad.with_finite_differences(t)
assert jax.tree.leaves(fd) == []
f = jax.jit(lambda t, x: apply_tesseract(t, {{"x": x, "y": x}})["z"])
assert f(t, jnp.array([1.0, 2.0])).tolist() == [1.0, 4.0]
assert f(fd, jnp.array([1.0, 3.0])).tolist() == [1.0, 9.0]
print(sys.modules.get("tesseract_jax") is not None)
"""


def _run(before: str) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHECK.format(before=textwrap.dedent(before), api=str(API)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("before", "loaded"),
    [
        ("import tesseract_jax\nimport tess_ad.jax", "True"),
        ("import tess_ad.jax\nimport tesseract_jax", "True"),
        # without tesseract-jax, tess_ad registers Tesseract itself
        ("sys.modules['tesseract_jax'] = None\nimport tess_ad.jax", "False"),
    ],
    ids=["tesseract_jax-first", "tess_ad-first", "no-tesseract_jax"],
)
def test_imports_in_either_order_and_jit_takes_the_client(before, loaded):
    assert _run(before) == loaded


@pytest.fixture(params=["local", "served"])
def client(request, test_tesseract, served_test_tesseract):
    if request.param == "local":
        return test_tesseract("metadata")
    return served_test_tesseract("metadata")


def _z(t, x, y):
    return apply_tesseract(t, {"x": x, "y": y})["z"]


def test_jit_takes_the_tesseract_as_an_argument(client):
    f = jax.jit(_z)
    np.testing.assert_array_equal(f(client, X, Y), X * Y)
    loss = jax.jit(jax.grad(lambda t, x, y: jnp.sum(_z(t, x, y) ** 2), argnums=(1, 2)))
    gx, gy = loss(client, X, Y)
    np.testing.assert_allclose(gx, 2 * X * Y * Y, rtol=1e-15)
    np.testing.assert_allclose(gy, 2 * X * Y * X, rtol=1e-15)
    with Spy(client) as spy:  # compiled once: the second call only runs it
        np.testing.assert_array_equal(f(client, Y, X), X * Y)
    assert spy.calls["apply"] == 1 and spy.calls["abstract_eval"] == 0


def test_tess_ad_wrappers_are_jit_arguments_too(client):
    f = jax.jit(jax.grad(lambda t, x: jnp.sum(_z(t, x, Y)), argnums=1))
    fd = tess_ad.with_finite_differences(client)
    retrying = tess_ad.with_retries(client)
    np.testing.assert_allclose(f(retrying, X), Y, rtol=1e-15)
    np.testing.assert_allclose(f(fd, X), Y, rtol=1e-7)
    with Spy(client) as spy:  # the FD gradient really came from apply, not the VJP
        f(fd, X + 1.0)
    assert spy.calls["vector_jacobian_product"] == 0 and spy.calls["apply"] > 1


def test_one_jitted_function_serves_two_clients(test_tesseract):
    """Clients compare by identity: another client is another trace, never a stale one."""
    a = test_tesseract("metadata")
    b = tess_ad.with_finite_differences(a)
    f = jax.jit(lambda t, x: apply_tesseract(t, {"x": x, "y": Y})["metadata"])
    with Spy(a) as spy:
        f(a, X)
        f(b, X)
        f(a, X)
    assert spy.calls["apply"] == 3
    assert jax.tree.structure(a) != jax.tree.structure(b)
