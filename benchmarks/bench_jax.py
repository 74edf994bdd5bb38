"""Overhead of ``jax.grad`` through tess_ad.jax, against tesseract-jax and direct endpoint calls.

One run, same Tesseract (examples/rosenbrock, analytic endpoints), in-process
and served. For each input size it times one gradient:

* direct:        ``apply`` + ``vector_jacobian_product`` called by hand (the floor);
* tesseract-jax: ``jax.grad`` through ``tesseract_jax.apply_tesseract``;
* tess_ad:       ``jax.grad`` through ``tess_ad.jax.apply_tesseract``;

eagerly and under ``jax.jit`` (compiled once, then timed). Under ``jit`` both
adapters drop the unused forward ``apply`` (one VJP per gradient), so they can
beat the direct floor; eagerly, tesseract-jax also calls ``abstract_eval`` on
every call. Times are medians of interleaved rounds; the table quotes ratios,
which are what carries over between machines.

Run: ``python benchmarks/bench_jax.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax
import jax.numpy as jnp
import numpy as np
import tesseract_jax
from tesseract_core import Tesseract

import tess_ad.jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import Server  # noqa: E402

API = ROOT / "examples" / "rosenbrock" / "tesseract_api.py"
SIZES = (10, 1000)  # the example VJP builds the dense Jacobian: O(n^2)


def median_times(
    fns: dict[str, object], rounds: int, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin.

    Interleaving the methods (one call of each per round) keeps slow drifts of
    a shared machine from favouring whichever method happened to run first.
    """
    for _ in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def grad_fns(client, x: jax.Array) -> dict[str, object]:
    def loss_with(apply):
        return lambda x: apply(client, {"x": x, "a": 1.0, "b": 100.0})["loss"]

    x_np = np.asarray(x)
    inputs = {"x": x_np, "a": 1.0, "b": 100.0}

    def direct():
        client.apply(inputs)
        return client.vector_jacobian_product(
            inputs, ["x"], ["loss"], {"loss": np.float64(1.0)}
        )["x"]

    tj = jax.grad(loss_with(tesseract_jax.apply_tesseract))
    ta = jax.grad(loss_with(tess_ad.jax.apply_tesseract))
    tj_jit, ta_jit = jax.jit(tj), jax.jit(ta)
    return {
        "direct": direct,
        "tesseract-jax": lambda: tj(x),
        "tess_ad": lambda: ta(x),
        "tesseract-jax jit": lambda: tj_jit(x),
        "tess_ad jit": lambda: ta_jit(x),
    }


def main() -> None:
    server = Server(API).start()
    rows = []
    try:
        clients = {
            "in-process": Tesseract.from_tesseract_api(str(API)),
            "served": Tesseract.from_url(server.url),
        }
        for where, client in clients.items():
            for n in SIZES:
                x = jnp.asarray(np.random.default_rng(0).standard_normal(n))
                fns = grad_fns(client, x)
                # same numbers from all three routes
                ref = np.asarray(fns["direct"]())
                for name in ("tesseract-jax", "tess_ad", "tess_ad jit"):
                    np.testing.assert_allclose(np.asarray(fns[name]()), ref, rtol=1e-12)
                t = median_times(fns, rounds=60 if where == "in-process" else 30)
                rows.append((where, n, t))
    finally:
        server.stop()

    header = (
        f"{'client':<11} {'n':>7} | {'direct':>9} {'tj eager':>9} {'tess_ad':>9} {'tj jit':>9} "
        f"{'tess_ad jit':>11} | {'ta/direct':>9} {'ta/tj':>6} {'ta jit/direct':>13} {'ta jit/tj jit':>13}"
    )
    print(
        "jax.grad of the Rosenbrock Tesseract (one apply + one VJP), median ms per gradient"
    )
    print(header)
    print("-" * len(header))
    for where, n, t in rows:
        ms = {k: 1e3 * v for k, v in t.items()}
        print(
            f"{where:<11} {n:>7} | {ms['direct']:>9.3f} {ms['tesseract-jax']:>9.3f} {ms['tess_ad']:>9.3f} "
            f"{ms['tesseract-jax jit']:>9.3f} {ms['tess_ad jit']:>11.3f} | "
            f"{t['tess_ad'] / t['direct']:>9.2f} {t['tess_ad'] / t['tesseract-jax']:>6.2f} "
            f"{t['tess_ad jit'] / t['direct']:>13.2f} {t['tess_ad jit'] / t['tesseract-jax jit']:>13.2f}"
        )
    print(
        "\nta = tess_ad.jax, tj = tesseract_jax; ratios < 1 mean tess_ad is faster. "
        "Under jit both drop the unused forward apply (one VJP per gradient); "
        "eagerly tesseract-jax also calls abstract_eval every time."
    )


if __name__ == "__main__":
    main()
