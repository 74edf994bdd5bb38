"""Per-call overhead and array copies of tess_ad against direct calls, tesseract-jax and tesseract-torch.

One gradient step of ``benchmarks/tesseracts/quadratic`` (O(n) endpoints, so
what is measured is the calls and the data passes, not the maths), for
n = 4, 1e3 and 1e6 float64 elements, in-process and served over HTTP
(``tesseract-runtime serve`` on a free loopback port, one worker). Eight ways,
all timed in one interleaved run:

* direct:           ``apply`` + ``vector_jacobian_product`` of ``loss`` called
                    by hand on NumPy arrays (what a minimal gradient step costs);
* jax only:         eager ``jax.grad`` of the same loss written in ``jax.numpy``,
                    no Tesseract: JAX's own per-grad machinery, which every eager
                    JAX adapter pays on top of the endpoint calls (the "floor");
* JAX eager:        ``jax.grad`` of ``loss`` through ``tess_ad.jax`` and through
                    ``tesseract_jax`` (the gradient only; the value is not used);
* JAX ``jit``:      the same two, compiled once before timing (both drop the
                    unused forward ``apply``: one VJP call per gradient);
* torch:            ``out = apply_tesseract(...); out["loss"].backward()``
                    through ``tess_ad.torch`` and through ``tesseract_torch``.

Timing: every round runs each way once (``k`` calls in a row, ``k`` chosen
so a slice lasts about 30 ms; the order rotates from round to round), and a
ratio such as tess_ad / direct is taken within each round; the table gives the
median of those per-round ratios. The machine is shared (2 cores, other jobs
running), so absolute times drift by tens of percent between runs; the ratios
are what to quote, and even they move by about +-10% at n = 4.

Memory (n = 1e6, in-process only): each way runs in a fresh subprocess, with
``MALLOC_MMAP_THRESHOLD_`` fixed so every large buffer (NumPy, torch or XLA)
is its own mmap, returned to the OS when freed. Before each measured step
``gc.collect()`` runs and the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs``); the peak above the RSS just before the step,
divided by the input's size (8 MB), counts the full-size buffers alive at the
same moment, whoever allocated them, including the returned gradient (the
direct calls need 1: the VJP's result). "held after" is what is still
allocated once the gradient is dropped and before the garbage collector runs:
buffers kept alive by reference cycles or caches. A second pass with
``tracemalloc`` sees only what NumPy allocates (NumPy registers its buffers
with tracemalloc; torch's and XLA's allocators do not), so the difference
between the two is the copies made in torch or XLA buffers. Medians over 5
steps after 2 warm-up steps; the resolution is about +-0.05 input sizes
(page and Python object churn). Linux only.

Run from the repository root (about 3-5 minutes on 2 cores)::

    python benchmarks/bench_overhead.py             # timing table + copy counts
    python benchmarks/bench_overhead.py --quick     # smoke test, ~1 minute
    python benchmarks/bench_overhead.py --profile   # cProfile of tess_ad at n = 4, in-process

Put a tess_ad source tree first on ``PYTHONPATH`` to measure that version;
the header prints which one was imported.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax
import jax.numpy as jnp
import numpy as np
import tesseract_jax
import tesseract_torch
import torch
from tesseract_core import Tesseract

import tess_ad
import tess_ad.jax
import tess_ad.torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import Server  # noqa: E402

API = HERE / "tesseracts" / "quadratic" / "tesseract_api.py"
SIZES = (4, 1_000, 1_000_000)
W = 2.0

WAYS = ("direct", "jax only", "ta jax", "tj", "ta jax jit", "tj jit", "ta torch", "tt")
LABELS = {
    "direct": "direct endpoint calls",
    "jax only": "eager jax.grad of the same loss in jax.numpy",
    "ta jax": "tess_ad.jax, eager jax.grad",
    "tj": "tesseract-jax, eager jax.grad",
    "ta jax jit": "tess_ad.jax, jit(jax.grad)",
    "tj jit": "tesseract-jax, jit(jax.grad)",
    "ta torch": "tess_ad.torch, forward + backward",
    "tt": "tesseract-torch, forward + backward",
}


# -- the eight ways of taking one gradient step ------------------------------


def steps(client, n: int) -> dict[str, Callable[[], object]]:
    """One gradient step of ``loss`` with respect to ``x`` each way; each returns the gradient."""
    x_np = np.random.default_rng(0).standard_normal(n)
    inputs = {"x": x_np, "w": W}
    one = np.float64(1.0)

    def direct():
        client.apply(inputs)
        return client.vector_jacobian_product(inputs, ["x"], ["loss"], {"loss": one})[
            "x"
        ]

    def jax_grad(apply):
        return jax.grad(lambda x: apply(client, {"x": x, "w": W})["loss"])

    x_jax = jnp.asarray(x_np)
    # JAX's own eager grad machinery, no Tesseract: an eager adapter costs at
    # least the direct calls plus this (the "floor" column)
    jax_only = jax.grad(lambda x: 0.5 * W * jnp.sum(x**2))
    ta, tj = (
        jax_grad(tess_ad.jax.apply_tesseract),
        jax_grad(tesseract_jax.apply_tesseract),
    )
    ta_jit, tj_jit = jax.jit(ta), jax.jit(tj)

    # a leaf sharing x_np's memory; each step hands its gradient over, so the
    # leaf holds none between steps (as the other ways hold none)
    x_torch = torch.from_numpy(x_np).requires_grad_()

    def torch_step(apply):
        def step():
            apply(client, {"x": x_torch, "w": W})["loss"].backward()
            grad, x_torch.grad = x_torch.grad, None
            return grad

        return step

    return {
        "direct": direct,
        "jax only": lambda: jax.block_until_ready(jax_only(x_jax)),
        "ta jax": lambda: jax.block_until_ready(ta(x_jax)),
        "tj": lambda: jax.block_until_ready(tj(x_jax)),
        "ta jax jit": lambda: jax.block_until_ready(ta_jit(x_jax)),
        "tj jit": lambda: jax.block_until_ready(tj_jit(x_jax)),
        "ta torch": torch_step(tess_ad.torch.apply_tesseract),
        "tt": torch_step(tesseract_torch.apply_tesseract),
    }


def working(
    fns: dict[str, Callable[[], object]], n: int, where: str
) -> dict[str, Callable[[], object]]:
    """The ways that give the exact gradient ``w * x``; the others are reported and left out.

    A tess_ad under construction may fail one way; the table then says
    ``failed`` there instead of the run stopping.
    """
    expected = W * np.random.default_rng(0).standard_normal(n)
    out = {}
    for name, fn in fns.items():
        try:
            np.testing.assert_allclose(np.asarray(fn()), expected, rtol=1e-12)
        except Exception as exc:  # reported, and the way left out
            first = (str(exc).strip().splitlines() or [""])[-1][:160]
            print(
                f"  {where}, n = {n}: {LABELS[name]} FAILED, left out: "
                f"{type(exc).__name__}: {first}",
                file=sys.stderr,
            )
        else:
            out[name] = fn
    if "direct" not in out:
        raise RuntimeError("the direct endpoint calls fail: nothing to compare with")
    return out


# -- timing -------------------------------------------------------------------


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, slice_s: float = 0.03
) -> list[dict[str, float]]:
    """Seconds per call of each way, one dict per round, the ways interleaved.

    Each way runs ``k`` times in a row per round (``k`` from a calibration
    call, so a slice lasts about ``slice_s``); the order of the ways rotates
    every round so none always runs right after the same neighbour.
    """
    names = list(fns)
    k = {}
    for name, fn in fns.items():  # each ran once already: working() is the warm-up
        start = time.perf_counter()
        fn()
        k[name] = max(1, min(200, round(slice_s / (time.perf_counter() - start))))
    out = []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        times = {}
        for name in order:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(k[name]):
                fn()
            times[name] = (time.perf_counter() - start) / k[name]
        out.append(times)
    return out


def median_ratio(rounds: list[dict[str, float]], a: str, b: str) -> str:
    if a not in rounds[0] or b not in rounds[0]:
        return "failed"
    return f"{statistics.median(r[a] / r[b] for r in rounds):.2f}x"


def median_floor(rounds: list[dict[str, float]]) -> str:
    """(direct + JAX's own eager grad) / direct: the least an eager JAX adapter costs."""
    if "jax only" not in rounds[0]:
        return "failed"
    return f"{statistics.median((r['direct'] + r['jax only']) / r['direct'] for r in rounds):.2f}x"


def median_ms(rounds: list[dict[str, float]], a: str) -> str:
    if a not in rounds[0]:
        return "failed"
    return f"{1e3 * statistics.median(r[a] for r in rounds):.3f}"


def rounds_for(where: str, n: int, quick: bool) -> int:
    if n >= 1_000_000:
        full = 4 if where == "served" else 21
    else:
        full = 30 if where == "served" else 60
    return max(2, full // 4) if quick else full


# -- memory (subprocess per way) ------------------------------------------------


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        return 1024 * int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def memory_worker(way: str, steps_measured: int = 5) -> None:
    """Run in a subprocess: print the extra memory of one step of ``way``, as JSON.

    Per step: ``gc.collect()``, then the baseline; ``peak`` is the high-water
    mark during the step, ``held`` what is still allocated once the step's
    result is dropped and before the garbage collector runs (buffers kept alive
    by reference cycles or caches). Medians over the measured steps.
    """
    client = Tesseract.from_tesseract_api(str(API))
    n = SIZES[-1]
    fn = steps(client, n)[way]
    nbytes = 8 * n
    for _ in range(2):
        fn()

    def measure(reset: Callable[[], None], current: Callable[[], int], peak):
        peaks, held = [], []
        for _ in range(steps_measured):
            gc.collect()
            reset()
            before = current()
            result = fn()
            peaks.append((peak() - before) / nbytes)
            del result
            held.append((current() - before) / nbytes)
        return statistics.median(peaks), statistics.median(held)

    def reset_rss() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS

    rss = measure(reset_rss, lambda: _vm("VmRSS"), lambda: _vm("VmHWM"))
    tracemalloc.start()
    fn()
    numpy = measure(
        tracemalloc.reset_peak,
        lambda: tracemalloc.get_traced_memory()[0],
        lambda: tracemalloc.get_traced_memory()[1],
    )
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "rss": rss[0],
                "rss_held": rss[1],
                "numpy": numpy[0],
                "numpy_held": numpy[1],
            }
        )
    )


def memory_table() -> dict[str, dict[str, float]]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = {}
    for way in WAYS:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--memory-worker", way],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [""])[-1][:160]
            print(f"  memory, {LABELS[way]} FAILED: {last}", file=sys.stderr)
            continue
        out[way] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# -- profile ------------------------------------------------------------------


def profile(calls: int = 2000, top: int = 18) -> None:
    """cProfile of tess_ad's eager jax.grad and torch step at n = 4, in-process."""
    client = Tesseract.from_tesseract_api(str(API))
    fns = steps(client, 4)
    src = str(Path(tess_ad.__file__).resolve().parent)
    for way in ("direct", "ta jax", "ta torch"):
        fn = fns[way]
        for _ in range(20):
            fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            fn()
        prof.disable()
        stats = pstats.Stats(prof)
        total = stats.total_tt
        # the Tesseract's own endpoint calls: what the direct way spends too
        endpoints = sum(
            ct
            for (file, _, func), (_, _, _, ct, _) in stats.stats.items()
            if file.endswith(os.path.join("tesseract_core", "sdk", "tesseract.py"))
            and func in ("apply", "vector_jacobian_product")
        )
        print(
            f"\n== {LABELS[way]}: {1e3 * total / calls:.3f} ms per step under "
            f"cProfile, {100 * endpoints / total:.1f}% of it in Tesseract.apply and "
            "Tesseract.vector_jacobian_product"
        )
        if way == "direct":
            continue
        rows = []
        for (file, line, func), (_, ncalls, tt, ct, _) in stats.stats.items():
            if file.startswith(src):
                rows.append((ct, tt, ncalls, f"{file[len(src) + 1 :]}:{line} {func}"))
        print(f"   {'cumulative':>10} {'own':>6} {'calls/step':>10}  tess_ad function")
        for ct, tt, ncalls, where in sorted(rows, reverse=True)[:top]:
            print(
                f"   {100 * ct / total:9.1f}% {100 * tt / total:5.1f}% {ncalls / calls:10.1f}  {where}"
            )
        own = sorted(rows, key=lambda r: r[1], reverse=True)[:8]
        print("   largest own time in tess_ad:")
        for _, tt, ncalls, where in own:
            print(f"   {100 * tt / total:5.1f}%  {ncalls / calls:6.1f}/step  {where}")
        inside = sum(r[1] for r in rows)
        print(f"   own time inside tess_ad, all functions: {100 * inside / total:.1f}%")


# -- main -----------------------------------------------------------------------


def version_line() -> str:
    src = Path(tess_ad.__file__).resolve().parent
    commit = subprocess.run(
        ["git", "-C", str(src), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(src), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    state = " (with uncommitted changes)" if dirty else ""
    return f"tess_ad from {src}, commit {commit or '?'}{state}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (smoke test)")
    parser.add_argument("--no-served", action="store_true", help="in-process only")
    parser.add_argument("--no-memory", action="store_true", help="skip copy counts")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile of tess_ad at n = 4 only"
    )
    parser.add_argument("--memory-worker", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tess_ad_bench_") as scratch:
        old_cwd = os.getcwd()
        os.chdir(scratch)  # in-process Tesseracts may write run folders
        try:
            if args.memory_worker:
                memory_worker(args.memory_worker)
                return
            print(version_line())
            print(
                f"jax {jax.__version__}, torch {torch.__version__}, "
                f"tesseract-jax {tesseract_jax.__version__}, "
                f"tesseract-torch {tesseract_torch.__version__}, {os.cpu_count()} CPUs"
            )
            if args.profile:
                profile()
                return
            run(args)
        finally:
            os.chdir(old_cwd)


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    results = []
    wheres = ("in-process",) if args.no_served else ("in-process", "served")
    for where in wheres:
        server = Server(API).start() if where == "served" else None
        try:
            client = (
                Tesseract.from_url(server.url)
                if server
                else Tesseract.from_tesseract_api(str(API))
            )
            for n in SIZES:
                fns = steps(client, n)
                fns = working(fns, n, where)
                rounds = interleaved(fns, rounds_for(where, n, args.quick))
                results.append((where, n, rounds))
                print(
                    f"  measured {where}, n = {n}: {len(rounds)} rounds "
                    f"({time.perf_counter() - started:.0f} s so far)",
                    file=sys.stderr,
                )
        finally:
            if server is not None:
                server.stop()

    memory = None if args.no_memory else memory_table()

    print(
        "\nOne gradient step of benchmarks/tesseracts/quadratic, float64; "
        "median of per-round ratios (shared 2-core machine: about +-10%)\n"
    )
    header = (
        f"{'client':<10} {'n':>9} {'direct ms':>10} | "
        f"{'jax floor':>9} {'ta/dir':>7} {'tj/dir':>7} {'ta/tj':>6} | "
        f"{'jit ta/dir':>10} {'jit ta/tj':>9} | "
        f"{'torch ta/dir':>12} {'tt/dir':>7} {'ta/tt':>6}"
    )
    print(header)
    print("-" * len(header))
    for where, n, rounds in results:

        def r(a, b, rounds=rounds):
            return median_ratio(rounds, a, b)

        print(
            f"{where:<10} {n:>9,} {median_ms(rounds, 'direct'):>10} | "
            f"{median_floor(rounds):>9} {r('ta jax', 'direct'):>7} {r('tj', 'direct'):>7} {r('ta jax', 'tj'):>6} | "
            f"{r('ta jax jit', 'direct'):>10} {r('ta jax jit', 'tj jit'):>9} | "
            f"{r('ta torch', 'direct'):>12} {r('tt', 'direct'):>7} {r('ta torch', 'tt'):>6}"
        )
    print(
        "\nta = tess_ad, tj = tesseract-jax, tt = tesseract-torch, dir = direct "
        "apply + vector_jacobian_product on NumPy. Ratios < 1: the first is faster. "
        "Under jit both JAX adapters drop the unused forward apply (one VJP call). "
        "jax floor = (direct + eager jax.grad of the same loss in jax.numpy) / direct: "
        "JAX's own eager machinery, which any eager adapter pays on top of the calls."
    )
    print("\nmedian ms per step:")
    print(f"{'client':<10} {'n':>9} " + " ".join(f"{w:>10}" for w in WAYS))
    for where, n, rounds in results:
        print(
            f"{where:<10} {n:>9,} "
            + " ".join(f"{median_ms(rounds, w):>10}" for w in WAYS)
        )

    if memory is not None:
        print(
            "\npeak extra memory during one step at n = 1,000,000, in-process, "
            "in units of the input size (8 MB), including the returned gradient:"
        )
        print(
            f"{'way':<38} {'peak, all buffers':>17} {'peak, NumPy':>11} "
            f"{'held after, all':>15} {'held after, NumPy':>17}"
        )
        for way in WAYS:
            if way not in memory:
                print(f"{LABELS[way]:<38} {'failed':>17}")
                continue
            m = memory[way]
            print(
                f"{LABELS[way]:<38} {m['rss']:>17.2f} {m['numpy']:>11.2f} "
                f"{m['rss_held']:>15.2f} {m['numpy_held']:>17.2f}"
            )
        print(
            "all buffers: peak RSS above the RSS before the step (NumPy, torch and "
            "XLA buffers); NumPy: tracemalloc, which sees NumPy's buffers only. "
            "held after: still allocated once the gradient is dropped, before the "
            "garbage collector runs (kept alive by reference cycles or caches)."
        )
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
