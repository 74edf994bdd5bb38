"""``jax.vmap`` over a Tesseract: one call per batch, one call per element, or several at once.

The Tesseract is ``tests/tesseracts/batched_rosenbrock`` (every array
``Array[..., Float64]``, NumPy broadcasting, so it computes a whole batch in
one call) with ``delay = 20 ms`` per call: the time of a simulator call,
against which the adapters' own costs are small. Two tables, all ways timed
in one interleaved run (each round runs every way once, in an order that
rotates; ratios are taken within a round and the median is quoted: the
machine is shared and absolute times drift):

1. In-process, ``jax.vmap`` of the Tesseract call and of its gradient
   (``vmap(grad)``), batches of B = 8 and 64: tess_ad and tesseract-jax with
   ``vmap_method="expand_dims"`` (one call per batch) against tess_ad with
   ``"sequential"`` (one call per element); and the same through
   ``tess_ad.torch`` under ``torch.func.vmap`` (tesseract-torch has no vmap
   methods).
2. Served by ``tesseract-runtime serve --num-workers 4``, ``vmap`` of the
   call over B = 32: ``"sequential"`` one call after the other against
   ``vmap_workers=4`` (four calls at once), in JAX and in PyTorch. Goal: at
   least 3x faster.

Run from the repository root (about 4 minutes)::

    python benchmarks/bench_vmap.py           # both tables
    python benchmarks/bench_vmap.py --quick   # fewer rounds (smoke test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax
import jax.numpy as jnp
import numpy as np
import tesseract_jax
import torch
from tesseract_core import Tesseract

import tess_ad.jax
import tess_ad.torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import Server  # noqa: E402

API = ROOT / "tests" / "tesseracts" / "batched_rosenbrock" / "tesseract_api.py"
DELAY = 0.02
Y = jnp.array([0.3, 0.7])


def vmapped(apply: Callable, client, method: str, grad: bool, **kwargs) -> Callable:
    def terms(x):
        inputs = {"x": x, "y": Y, "delay": DELAY}
        return apply(client, inputs, vmap_method=method, **kwargs)["result"]

    f = jax.grad(lambda x: terms(x).sum()) if grad else terms
    return jax.vmap(f)


def torch_vmapped(client, method: str, grad: bool, **kwargs) -> Callable:
    """The same under ``torch.func.vmap`` through ``tess_ad.torch``, NumPy in and out."""
    y = torch.from_numpy(np.array(Y))

    def terms(x):
        inputs = {"x": x, "y": y, "delay": DELAY}
        return tess_ad.torch.apply_tesseract(
            client, inputs, vmap_method=method, **kwargs
        )["result"]

    f = torch.func.vmap(torch.func.grad(lambda x: terms(x).sum()) if grad else terms)
    return lambda xs: f(torch.from_numpy(np.array(xs))).numpy()


def reference(xs: jax.Array, grad: bool) -> jax.Array:
    def terms(x):
        return (1.0 - x) ** 2 + 100.0 * (Y - x**2) ** 2

    return jax.vmap(jax.grad(lambda x: terms(x).sum()) if grad else terms)(xs)


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int
) -> list[dict[str, float]]:
    names = list(fns)
    out = []
    for r in range(rounds):
        times = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            jax.block_until_ready(fns[name]())
            times[name] = time.perf_counter() - start
        out.append(times)
    return out


def ratio(rounds: list[dict[str, float]], a: str, b: str) -> float:
    return statistics.median(r[a] / r[b] for r in rounds)


def ms(rounds: list[dict[str, float]], a: str) -> float:
    return 1e3 * statistics.median(r[a] for r in rounds)


def checked(fns: dict[str, Callable[[], object]], expected: jax.Array) -> None:
    for name, fn in fns.items():
        np.testing.assert_allclose(np.asarray(fn()), expected, rtol=1e-12, err_msg=name)


def table_methods(quick: bool) -> None:
    client = Tesseract.from_tesseract_api(str(API))
    print(
        "\n1. in-process, 20 ms per call; median of per-round ratios "
        "(ta = tess_ad.jax, tj = tesseract-jax, seq = tess_ad.jax sequential,\n"
        "pt = tess_ad.torch, pseq = tess_ad.torch sequential)\n"
    )
    print(
        f"{'what':10s} {'B':>4s} | {'ta expand':>9s} {'tj expand':>9s} "
        f"{'pt expand':>9s} {'seq':>7s} {'pseq':>7s} ms | {'ta/tj':>6s} {'pt/ta':>6s} "
        f"{'seq/ta':>7s} {'pseq/pt':>7s}"
    )
    print("-" * 96)
    for grad in (False, True):
        for size in (8, 64):
            xs = jnp.asarray(np.random.default_rng(size).standard_normal((size, 2)))
            fns = {
                "ta": lambda g=grad, x=xs: vmapped(
                    tess_ad.jax.apply_tesseract, client, "expand_dims", g
                )(x),
                "tj": lambda g=grad, x=xs: vmapped(
                    tesseract_jax.apply_tesseract, client, "expand_dims", g
                )(x),
                "seq": lambda g=grad, x=xs: vmapped(
                    tess_ad.jax.apply_tesseract, client, "sequential", g
                )(x),
                "pt": lambda g=grad, x=xs: torch_vmapped(client, "expand_dims", g)(x),
                "pseq": lambda g=grad, x=xs: torch_vmapped(client, "sequential", g)(x),
            }
            checked(fns, reference(xs, grad))
            rounds = interleaved(fns, 3 if quick else (7 if size == 64 else 15))
            what = "vmap(grad)" if grad else "vmap"
            print(
                f"{what:10s} {size:4d} | {ms(rounds, 'ta'):9.1f} {ms(rounds, 'tj'):9.1f} "
                f"{ms(rounds, 'pt'):9.1f} {ms(rounds, 'seq'):7.0f} "
                f"{ms(rounds, 'pseq'):7.0f}    | {ratio(rounds, 'ta', 'tj'):5.2f}x "
                f"{ratio(rounds, 'pt', 'ta'):5.2f}x {ratio(rounds, 'seq', 'ta'):6.1f}x "
                f"{ratio(rounds, 'pseq', 'pt'):6.1f}x"
            )


def table_workers(quick: bool) -> None:
    server = Server(API, num_workers=4).start()
    try:
        client = Tesseract.from_url(server.url)
        size = 32
        xs = jnp.asarray(np.random.default_rng(0).standard_normal((size, 2)))
        fns = {
            "serial": lambda: vmapped(
                tess_ad.jax.apply_tesseract, client, "sequential", False
            )(xs),
            "4 at once": lambda: vmapped(
                tess_ad.jax.apply_tesseract,
                client,
                "sequential",
                False,
                vmap_workers=4,
            )(xs),
            "torch serial": lambda: torch_vmapped(client, "sequential", False)(xs),
            "torch 4 at once": lambda: torch_vmapped(
                client, "sequential", False, vmap_workers=4
            )(xs),
        }
        checked(fns, reference(xs, False))
        results = {name: np.asarray(fn()) for name, fn in fns.items()}
        identical = {
            "jax": np.array_equal(results["serial"], results["4 at once"]),
            "torch": np.array_equal(
                results["torch serial"], results["torch 4 at once"]
            ),
        }
        rounds = interleaved(fns, 3 if quick else 9)
    finally:
        server.stop()
    print(
        "\n2. served, 4 workers, 20 ms per call, vmap over B = 32 with "
        "vmap_method='sequential'\n"
    )
    print(
        f"{'':6s} {'serial ms':>10s} {'4 at once ms':>13s} {'speed-up':>9s}  bit-identical"
    )
    print("-" * 57)
    for framework, prefix in (("jax", ""), ("torch", "torch ")):
        serial, at_once = f"{prefix}serial", f"{prefix}4 at once"
        print(
            f"{framework:6s} {ms(rounds, serial):10.1f} {ms(rounds, at_once):13.1f} "
            f"{ratio(rounds, serial, at_once):8.2f}x  {identical[framework]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    print(
        f"jax {jax.__version__}, tesseract-jax {tesseract_jax.__version__}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs"
    )
    table_methods(args.quick)
    table_workers(args.quick)


if __name__ == "__main__":
    main()
