"""Many threads, one Tesseract: the results are those of a serial run, bit for bit, and nothing hangs.

Users drive long optimisation loops from several threads against one client
(a served simulator with several workers, or an in-process one). Each test
runs ``N_THREADS`` threads of ``N_STEPS`` gradient-descent steps, each thread
from its own starting point (so a result handed to the wrong thread would show
up), and compares every thread's whole trajectory (every gradient and the
final point) with the same loop run serially, with ``np.array_equal``: the
arithmetic is the same in both, so any difference is a mix-up between threads.

The served Tesseract runs with 4 workers, so calls really run in parallel on
the server. The served runs are compared with the serial run on the in-process
client of the same ``tesseract_api.py``: the transport is lossless and the
server computes with the same NumPy code, so the bits agree too.

A deadlock (JAX host callbacks are a known source) fails the test after
``JOIN_TIMEOUT`` seconds with the stacks of the threads still running, rather
than hanging the suite: workers are daemon threads joined with a deadline.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import example_inputs

import tess_ad
import tess_ad.jax as tjax
import tess_ad.torch as ttorch

N_THREADS = 8
N_STEPS = 50
N_STEPS_FD = 10
JOIN_TIMEOUT = 240.0
LR = 1e-4
LR_FD = 1e-2
MODES = ("jax-jit", "jax-eager", "torch")

# Thread timings, printed at the end of the module (run with -s to see them).
TIMINGS: list[tuple[str, float, float]] = []


# --------------------------------------------------------------------------
# Loops: rosenbrock (analytic endpoints) and nested (finite differences)
# --------------------------------------------------------------------------


def rosenbrock_x0(i: int) -> np.ndarray:
    """Starting point of thread ``i``: every thread has its own."""
    return np.linspace(-1.0, 1.5, 6) + 0.05 * i


def rosenbrock_loop(mode: str) -> Callable[[Any, np.ndarray, int], dict]:
    """``loop(client, x0, steps) -> {"grads": (steps, n), "x": (n,)}`` for one framework."""
    if mode == "torch":

        def torch_loop(client: Any, x0: np.ndarray, steps: int) -> dict:
            x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
            grads = []
            for _ in range(steps):
                out = ttorch.apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})
                out["loss"].backward()
                with torch.no_grad():
                    grads.append(x.grad.numpy().copy())
                    x -= LR * x.grad
                x.grad = None
            return {"grads": np.stack(grads), "x": x.detach().numpy().copy()}

        return torch_loop

    def jax_loop(client: Any, x0: np.ndarray, steps: int, grad_fn=None) -> dict:
        x = jnp.asarray(x0)
        grads = []
        for _ in range(steps):
            g = grad_fn(x)
            grads.append(np.asarray(g))
            x = x - LR * g
        return {"grads": np.stack(grads), "x": np.asarray(x)}

    def make(client: Any) -> Callable[[jax.Array], jax.Array]:
        def loss(x):
            return tjax.apply_tesseract(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]

        grad = jax.grad(loss)
        return jax.jit(grad) if mode == "jax-jit" else grad

    grad_fns: dict[int, Callable] = {}
    lock = threading.Lock()

    def loop(client: Any, x0: np.ndarray, steps: int) -> dict:
        # one gradient function per client, shared by every thread (one jit cache)
        with lock:
            fn = grad_fns.setdefault(id(client), make(client))
        return jax_loop(client, x0, steps, fn)

    return loop


NESTED_KEYS = ("alpha", "beta.v{1}")


def nested_inputs(params: dict) -> dict:
    inputs = example_inputs("nested")
    layers = [
        {**layer, "w": np.asarray(layer["w"]), "scale": np.asarray(layer["scale"])}
        for layer in inputs["layers"]
    ]
    return {**inputs, "params": params, "layers": layers}


def nested_x0(i: int) -> dict[str, np.ndarray]:
    base = example_inputs("nested")["params"]
    return {
        k: np.asarray(base[k]) + 0.02 * i * (j + 1) for j, k in enumerate(NESTED_KEYS)
    }


def nested_loop(mode: str) -> Callable[[Any, dict, int], dict]:
    """Gradient descent on ``summary.{sumsq}`` over the ``params`` dict (FD gradients)."""
    if mode == "torch":

        def torch_loop(client: Any, x0: dict, steps: int) -> dict:
            p = {k: torch.tensor(v, requires_grad=True) for k, v in x0.items()}
            grads = []
            for _ in range(steps):
                out = ttorch.apply_tesseract(client, nested_inputs(p))
                out["summary"]["sumsq"].backward()
                with torch.no_grad():
                    grads.append(
                        np.concatenate([p[k].grad.numpy() for k in NESTED_KEYS])
                    )
                    for v in p.values():
                        v -= LR_FD * v.grad
                        v.grad = None
            return {
                "grads": np.stack(grads),
                "x": np.concatenate([p[k].detach().numpy() for k in NESTED_KEYS]),
            }

        return torch_loop

    def jax_loop(client: Any, x0: dict, steps: int) -> dict:
        def loss(params):
            return tjax.apply_tesseract(client, nested_inputs(params))["summary"][
                "sumsq"
            ]

        grad = jax.jit(jax.grad(loss))
        p = {k: jnp.asarray(v) for k, v in x0.items()}
        grads = []
        for _ in range(steps):
            g = grad(p)
            grads.append(np.concatenate([np.asarray(g[k]) for k in NESTED_KEYS]))
            p = {k: p[k] - LR_FD * g[k] for k in p}
        return {
            "grads": np.stack(grads),
            "x": np.concatenate([np.asarray(p[k]) for k in NESTED_KEYS]),
        }

    return jax_loop


# --------------------------------------------------------------------------
# Running threads with a deadline, and counting overlapping calls
# --------------------------------------------------------------------------


class InFlight:
    """Counts how many calls of a real client's endpoints run at the same time.

    Wraps the bound methods of the client object (as ``helpers.Spy`` does), so
    the count is of calls that really reached the Tesseract.
    """

    METHODS = ("apply", "vector_jacobian_product")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.current = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()
        for name in self.METHODS:
            setattr(client, name, self._wrap(getattr(client, name)))

    def _wrap(self, method: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.current += 1
                self.calls += 1
                self.peak = max(self.peak, self.current)
            try:
                return method(*args, **kwargs)
            finally:
                with self._lock:
                    self.current -= 1

        return wrapper

    def restore(self) -> None:
        for name in self.METHODS:
            vars(self.client).pop(name, None)


def run_threads(
    fn: Callable[..., Any], args: Sequence[tuple], label: str
) -> tuple[list[Any], float]:
    """Run ``fn(*args[i])`` on one daemon thread each, all released together.

    Returns the results in thread order and the wall time. Fails the test,
    with the stack of every thread still running, if they are not all done
    within ``JOIN_TIMEOUT`` seconds; re-raises the first worker exception.
    """
    n = len(args)
    results: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            results[i] = fn(*args[i])
        except BaseException as exc:
            errors[i] = exc

    threads = [
        threading.Thread(target=worker, args=(i,), daemon=True, name=f"{label}-{i}")
        for i in range(n)
    ]
    start = time.monotonic()
    for th in threads:
        th.start()
    deadline = start + JOIN_TIMEOUT
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - start
    alive = [th for th in threads if th.is_alive()]
    if alive:
        frames = sys._current_frames()
        stacks = "\n".join(
            f"--- {th.name}\n" + "".join(traceback.format_stack(frames[th.ident]))
            for th in alive
            if th.ident in frames
        )
        pytest.fail(
            f"{label}: {len(alive)} of {n} threads still running after "
            f"{JOIN_TIMEOUT:.0f} s (deadlock?). Their stacks:\n{stacks}",
            pytrace=False,
        )
    for exc in errors:
        if exc is not None:
            raise exc
    return results, elapsed


def assert_same_trajectories(
    actual: list[dict], expected: list[dict], label: str
) -> None:
    """Bit-for-bit equality, naming every thread and quantity that differs."""
    bad = []
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        for key in ("grads", "x"):
            if a[key].shape != e[key].shape or not np.array_equal(a[key], e[key]):
                diff = (
                    np.max(np.abs(a[key] - e[key]))
                    if a[key].shape == e[key].shape
                    else "shape"
                )
                bad.append(f"thread {i} {key}: max abs diff {diff}")
    assert not bad, (
        f"{label}: threaded results differ from the serial run:\n" + "\n".join(bad)
    )


# --------------------------------------------------------------------------
# Serial references (in-process, computed once per module)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serial_rosenbrock(local_tesseract):
    """``mode -> [result of thread i run serially]`` on the in-process client."""
    cache: dict[str, tuple[list[dict], float]] = {}

    def get(mode: str) -> list[dict]:
        if mode not in cache:
            loop = rosenbrock_loop(mode)
            client = local_tesseract("rosenbrock")
            start = time.monotonic()
            results = [
                loop(client, rosenbrock_x0(i), N_STEPS) for i in range(N_THREADS)
            ]
            cache[mode] = (results, time.monotonic() - start)
        return cache[mode][0]

    get.cache = cache
    return get


@pytest.fixture(scope="module", autouse=True)
def _print_timings():
    yield
    if TIMINGS:
        print("\nconcurrency timings (wall s): case, serial in-process, threaded")
        for label, serial, threaded in TIMINGS:
            print(f"  {label:40s} {serial:8.2f} {threaded:8.2f}")


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_threads_in_process_match_serial(local_tesseract, serial_rosenbrock, mode):
    """8 threads x 50 steps on one in-process client: serial results, bit for bit."""
    expected = serial_rosenbrock(mode)
    client = local_tesseract("rosenbrock")
    loop = rosenbrock_loop(mode)
    counter = InFlight(client)
    try:
        results, elapsed = run_threads(
            loop,
            [(client, rosenbrock_x0(i), N_STEPS) for i in range(N_THREADS)],
            f"in-process {mode}",
        )
    finally:
        counter.restore()
    assert_same_trajectories(results, expected, f"in-process {mode}")
    # jit(grad) drops the unused forward apply: one VJP per step; eager: apply + VJP
    per_step = 1 if mode == "jax-jit" else 2
    assert counter.calls == N_THREADS * N_STEPS * per_step
    TIMINGS.append(
        (f"rosenbrock in-process {mode}", serial_rosenbrock.cache[mode][1], elapsed)
    )


@pytest.mark.served
@pytest.mark.parametrize("mode", MODES)
def test_threads_served_four_workers_match_serial(
    served_tesseract, serial_rosenbrock, mode
):
    """8 threads x 50 steps on one HTTP client of a 4-worker server: serial results, bit for bit.

    Calls overlap for real (at least two in flight at once), since each thread
    waits on the network with the GIL released.
    """
    expected = serial_rosenbrock(mode)
    client = served_tesseract("rosenbrock", num_workers=4)
    loop = rosenbrock_loop(mode)
    counter = InFlight(client)
    try:
        results, elapsed = run_threads(
            loop,
            [(client, rosenbrock_x0(i), N_STEPS) for i in range(N_THREADS)],
            f"served {mode}",
        )
    finally:
        counter.restore()
    assert_same_trajectories(results, expected, f"served {mode}")
    per_step = 1 if mode == "jax-jit" else 2
    assert counter.calls == N_THREADS * N_STEPS * per_step
    assert counter.peak >= 2, "the threads never had two calls in flight at once"
    TIMINGS.append(
        (f"rosenbrock served x4 {mode}", serial_rosenbrock.cache[mode][1], elapsed)
    )


@pytest.mark.served
def test_jax_and_torch_threads_share_one_served_client(
    served_tesseract, serial_rosenbrock
):
    """JAX (jit and eager) and torch threads on the same served client at once."""
    client = served_tesseract("rosenbrock", num_workers=4)
    modes = [MODES[i % len(MODES)] for i in range(N_THREADS)]
    loops = {mode: rosenbrock_loop(mode) for mode in MODES}
    expected = [serial_rosenbrock(mode)[i] for i, mode in enumerate(modes)]
    results, _ = run_threads(
        lambda mode, x0: loops[mode](client, x0, N_STEPS),
        [(mode, rosenbrock_x0(i)) for i, mode in enumerate(modes)],
        "mixed frameworks",
    )
    assert_same_trajectories(results, expected, "mixed frameworks")


@pytest.mark.parametrize("mode", ["jax-jit", "torch"])
def test_threads_through_finite_differences_match_serial(local_tesseract, mode):
    """One ``with_finite_differences`` proxy of the nested Tesseract shared by 8 threads.

    Each step's gradient is a central-difference VJP (12 apply calls for the
    6 ``params`` elements); the proxy, its schema and the JAX shape records
    are shared, the starting points are not.
    """
    fd = tess_ad.with_finite_differences(local_tesseract("nested"))
    loop = nested_loop(mode)
    if mode == "jax-jit":
        # no abstract_eval and free output shapes: one eager call records them
        tjax.apply_tesseract(fd, nested_inputs(nested_x0(0)))
    start = time.monotonic()
    expected = [loop(fd, nested_x0(i), N_STEPS_FD) for i in range(N_THREADS)]
    serial = time.monotonic() - start
    results, elapsed = run_threads(
        loop, [(fd, nested_x0(i), N_STEPS_FD) for i in range(N_THREADS)], f"fd {mode}"
    )
    assert_same_trajectories(results, expected, f"finite differences {mode}")
    # the gradients are real numbers, not a silent zero
    for r in expected:
        assert np.all(np.isfinite(r["grads"])) and np.any(r["grads"] != 0)
    TIMINGS.append((f"nested FD in-process {mode}", serial, elapsed))
