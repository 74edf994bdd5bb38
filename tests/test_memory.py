"""2,000 forward+backward calls keep memory flat: no leak, no cache that grows per call.

Each test makes ``WARMUP`` forward+backward calls on the in-process rosenbrock
Tesseract, takes a snapshot, makes ``CALLS - WARMUP`` more, and compares:

* the process RSS (psutil): growth below ``RSS_BOUND``;
* the number of objects tracked by Python's garbage collector (every dict,
  list, ``Leaf``, ``TesseractCall``... that stays alive): growth below
  ``OBJECT_SLACK``, so even one object kept per call (1,500) is caught;
* the caches tess_ad keeps (parsed schemas per client, JAX output-shape
  records, fixed-schema specs), the live ``TesseractCall`` objects, and under
  ``jit`` the number of traces (exactly one) and the jit cache size (one).

Why ``RSS_BOUND = 8 MiB``: after warm-up the RSS measured here moves by at
most about 2.5 MiB either way over 1,500 calls (allocator noise; usually 0).
The leak this file found (JAX's abstract-eval cache keeping every eager
call's ``TesseractCall``) grew it by 10-13 MiB over 1,500 calls; keeping each
torch call's outputs alive grows it by 7-9 MiB. 8 MiB is three times the
noise and catches a leak of one call's whole state per call (about 6 KiB or
more) most of the time; it is the coarse check, for native memory. The sharp
one is the object count: it catches Python-level leaks of any size (31
objects per call for the JAX leak, 25 for kept torch outputs), as
``test_the_check_catches_a_leak`` shows.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import psutil
import pytest
import torch

import tess_ad._schema as core_schema
import tess_ad.jax._call as jax_call
import tess_ad.jax._spec as jax_spec
import tess_ad.torch._call as torch_call
from tess_ad.jax import apply_tesseract as jax_apply
from tess_ad.torch import apply_tesseract as torch_apply

CALLS = 2000
WARMUP = 500
RSS_BOUND = 8 * 2**20
OBJECT_SLACK = 500
X0 = np.linspace(-1.0, 1.5, 6)
MEASURED: list[str] = []


def point(i: int) -> np.ndarray:
    """A different point on each call (seven distinct values, same shape)."""
    return X0 + 1e-3 * (i % 7)


@dataclass
class Snapshot:
    rss: int
    objects: int
    schema_cache: int
    records: int
    fixed_specs: int
    jax_calls: int
    torch_calls: int


def snapshot(client: Any) -> Snapshot:
    gc.collect()
    objects = gc.get_objects()
    return Snapshot(
        rss=psutil.Process().memory_info().rss,
        objects=len(objects),
        schema_cache=len(core_schema._CACHE),
        records=len(jax_spec._RECORDS.get(client, {})),
        fixed_specs=len(jax_spec._FIXED),
        jax_calls=sum(type(o) is jax_call.TesseractCall for o in objects),
        torch_calls=sum(type(o) is torch_call.TesseractCall for o in objects),
    )


def make_step(mode: str, client: Any, traces: list[int]) -> Callable[[int], Any]:
    """One forward+backward call: ``step(i) -> (gradient, outputs)`` for call ``i``."""
    if mode == "torch":

        def torch_step(i: int) -> Any:
            x = torch.tensor(point(i), requires_grad=True)
            out = torch_apply(client, {"x": x, "a": 1.0, "b": 100.0})
            out["loss"].backward()
            return x.grad, out

        return torch_step

    def loss(x):
        traces.append(1)  # runs once per trace (jit), or on every call (eager)
        return jax_apply(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]

    grad = jax.jit(jax.grad(loss)) if mode == "jax-jit" else jax.grad(loss)

    def jax_step(i: int) -> Any:
        g = grad(jnp.asarray(point(i)))
        return g, g

    jax_step.jitted = grad
    return jax_step


def measure(
    mode: str, client: Any, keep: list | None = None
) -> tuple[Snapshot, Snapshot, list[int], Any]:
    traces: list[int] = []
    step = make_step(mode, client, traces)
    for i in range(WARMUP):
        grad, out = step(i)
    del out  # nothing of the last call stays referenced here
    before = snapshot(client)
    start = time.monotonic()
    for i in range(WARMUP, CALLS):
        grad, out = step(i)
        if keep is not None:
            keep.append(out)
        del out
    per_call = (time.monotonic() - start) / (CALLS - WARMUP)
    after = snapshot(client)
    MEASURED.append(
        f"{mode}{' (keeping outputs)' if keep is not None else ''}: "
        f"RSS {before.rss / 2**20:.1f} -> {after.rss / 2**20:.1f} MiB "
        f"(+{(after.rss - before.rss) / 2**20:.2f}), gc objects "
        f"{after.objects - before.objects:+d}, {per_call * 1e3:.2f} ms per call"
    )
    np.testing.assert_array_equal(np.isfinite(np.asarray(grad)), True)
    return before, after, traces, step


@pytest.fixture(scope="module", autouse=True)
def _print_measurements():
    yield
    if MEASURED:
        print(f"\nmemory over calls {WARMUP}..{CALLS}:\n  " + "\n  ".join(MEASURED))


@pytest.mark.parametrize("mode", ["jax-eager", "jax-jit", "torch"])
def test_memory_stays_flat(local_tesseract, mode):
    client = local_tesseract("rosenbrock")
    before, after, traces, step = measure(mode, client)

    growth = after.rss - before.rss
    assert growth < RSS_BOUND, (
        f"{mode}: RSS grew by {growth / 2**20:.2f} MiB over {CALLS - WARMUP} calls "
        f"(bound {RSS_BOUND / 2**20:.0f} MiB)"
    )
    objects = after.objects - before.objects
    assert objects < OBJECT_SLACK, (
        f"{mode}: {objects} more gc-tracked objects after {CALLS - WARMUP} calls"
    )
    # no cache grows per call
    assert after.schema_cache == before.schema_cache
    assert after.records == before.records
    assert after.fixed_specs == before.fixed_specs
    # no TesseractCall outlives its call (other tests may hold a few of their own)
    assert after.torch_calls == before.torch_calls
    assert after.jax_calls == before.jax_calls
    if mode == "jax-jit":
        assert len(traces) == 1, f"traced {len(traces)} times"
        assert step.jitted._cache_size() == 1
    elif mode == "jax-eager":
        assert len(traces) == CALLS


def test_the_check_catches_a_leak(local_tesseract):
    """Keeping each call's output (what a leak would do) fails the checks above."""
    client = local_tesseract("rosenbrock")
    keep: list = []
    before, after, _, _ = measure("torch", client, keep=keep)
    assert len(keep) == CALLS - WARMUP
    assert after.objects - before.objects >= OBJECT_SLACK
    keep.clear()


@pytest.mark.parametrize("framework", ["jax-eager", "torch"])
def test_a_gradient_step_leaves_no_reference_cycles(local_tesseract, framework):
    """Every array of a step is freed when the step's objects go, not at the next GC.

    A reference cycle (a recursive closure used to be one) keeps a step's inputs
    and outputs alive until the garbage collector runs, which at n = 1e6 is
    16 MB per step and the collections themselves cost time.
    """
    t = local_tesseract("rosenbrock")
    x0 = np.array([-1.2, 1.0, 0.5, 2.0])

    if framework == "torch":

        def step():
            x = torch.tensor(x0, requires_grad=True)
            torch_apply(t, {"x": x, "a": 1.0, "b": 100.0})["loss"].backward()

    else:
        grad = jax.grad(lambda x: jax_apply(t, {"x": x, "a": 1.0, "b": 100.0})["loss"])

        def step():
            grad(jnp.asarray(x0))

    for _ in range(3):  # warm caches
        step()
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        step()
        assert gc.collect() == 0  # nothing unreachable was left for the collector
    finally:
        if was:
            gc.enable()


def test_an_eager_jax_gradient_holds_no_numpy_buffer_after_it_is_dropped():
    """The NumPy arrays of an eager ``jax.grad`` step are freed with the gradient.

    Handing a large VJP result to JAX with ``jnp.asarray``/``jax.device_put``
    kept that NumPy array referenced inside JAX until a later JAX call: after
    the step and ``del``, one input size of NumPy memory was still allocated
    (and an eager step at n = 1e6 peaked at 3 input sizes instead of 2).
    tracemalloc sees exactly NumPy's buffers; no garbage collection runs
    between the step and the check.
    """
    import tracemalloc
    from pathlib import Path

    from tesseract_core import Tesseract

    # the benchmarks' O(n) Tesseract: its VJP allocates the gradient and nothing more
    api = Path(__file__).parents[1] / "benchmarks/tesseracts/quadratic/tesseract_api.py"
    t = Tesseract.from_tesseract_api(str(api))
    n = 100_000
    x = jnp.asarray(np.linspace(-1.0, 1.5, n))
    grad = jax.grad(lambda x: jax_apply(t, {"x": x, "w": 2.0})["loss"])
    for _ in range(2):  # warm caches
        jax.block_until_ready(grad(x))
    tracemalloc.start()
    was = gc.isenabled()
    try:
        gc.collect()
        gc.disable()
        before = tracemalloc.get_traced_memory()[0]
        g = jax.block_until_ready(grad(x))
        assert g.shape == (n,)
        del g
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        if was:
            gc.enable()
    nbytes = 8 * n
    assert held < 0.25 * nbytes, (
        f"{held / nbytes:.2f} input sizes of NumPy memory still allocated after the "
        "gradient was dropped"
    )
