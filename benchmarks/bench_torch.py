"""Overhead of one forward + backward through tess_ad.torch, against the references.

For each case, one "step" is: evaluate the Tesseract at x and get the gradient
of a scalar output with respect to x. Three ways, same Tesseract, same run:

* direct       -- tesseract.apply(...) + tesseract.vector_jacobian_product(...)
                  on NumPy arrays (the floor: no framework at all);
* tesseract-torch -- tesseract_torch.apply_tesseract + loss.backward();
* tess_ad      -- tess_ad.torch.apply_tesseract + loss.backward().

Printed: median time per step and the ratios tess_ad / direct and
tess_ad / tesseract-torch. Absolute times depend on the machine; the ratios are
what to quote. Run from the repository root:

    python benchmarks/bench_torch.py            # ~1 minute on 2 cores
    python benchmarks/bench_torch.py --quick    # a few seconds, fewer repeats
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
import tesseract_torch
import torch
from tesseract_core import Tesseract

from tess_ad.torch import apply_tesseract

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


# -- the three ways of taking one step ---------------------------------------


def direct_step(
    t: Tesseract, inputs: dict, x_path: str, loss: str
) -> Callable[[], None]:
    def step() -> None:
        t.apply(inputs)
        t.vector_jacobian_product(
            inputs, [x_path], [loss], {loss: np.ones((), inputs[x_path].dtype)}
        )

    return step


def torch_step(
    apply: Callable, t: Tesseract, inputs: dict, x_path: str, loss: str
) -> Callable[[], None]:
    x0 = torch.from_numpy(inputs[x_path])

    def step() -> None:
        x = x0.clone().requires_grad_()
        apply(t, {**inputs, x_path: x})[loss].backward()
        assert x.grad is not None

    return step


def timeit(
    steps: list[Callable[[], None]], seconds: float, rounds: int = 10
) -> list[float]:
    """Median seconds per call of each step, the steps interleaved round by round.

    Interleaving makes the ratios robust to load that changes during the run
    (other processes on a shared machine): every method sees the same
    conditions, a slice at a time.
    """
    for step in steps:
        for _ in range(3):  # warm-up (schema fetch, caches, imports)
            step()
    samples: list[list[float]] = [[] for _ in steps]
    per_slice = seconds / (rounds * len(steps))
    for _ in range(rounds):
        for step, times in zip(steps, samples, strict=True):
            deadline = time.perf_counter() + per_slice
            while True:
                start = time.perf_counter()
                step()
                end = time.perf_counter()
                times.append(end - start)
                if end >= deadline:
                    break
    return [statistics.median(times) for times in samples]


# -- served Tesseract ---------------------------------------------------------


class Served:
    """``tesseract-runtime serve`` of an example on a free loopback port."""

    def __init__(self, api: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tesseract_core.runtime.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=dict(os.environ, TESSERACT_API_PATH=str(api)),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=tempfile.gettempdir(),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.log.seek(0)
        output = self.log.read().decode(errors="replace")
        self.stop()
        raise RuntimeError(f"could not serve {api}:\n{output}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()


# -- cases --------------------------------------------------------------------


def cases(
    served_rosenbrock: Tesseract | None,
) -> list[tuple[str, Tesseract, dict, str, str]]:
    rosenbrock = Tesseract.from_tesseract_api(
        str(EXAMPLES / "rosenbrock" / "tesseract_api.py")
    )
    float32 = Tesseract.from_tesseract_api(
        str(EXAMPLES / "float32" / "tesseract_api.py")
    )
    rng = np.random.default_rng(0)
    out = [
        (
            "rosenbrock, in-process, n=4",
            rosenbrock,
            {"x": np.array([-1.2, 1.0, 0.5, 2.0]), "a": 1.0, "b": 100.0},
            "x",
            "loss",
        ),
        (
            "rosenbrock, in-process, n=1000",
            rosenbrock,
            {"x": rng.normal(size=1000), "a": 1.0, "b": 100.0},
            "x",
            "loss",
        ),
        (
            "float32, in-process, n=1000",
            float32,
            {
                "x": rng.normal(size=1000).astype(np.float32),
                "w": np.float32(1.5),
                "shift": np.zeros(1000, np.float32),
            },
            "x",
            "energy",
        ),
    ]
    if served_rosenbrock is not None:
        out.append(
            (
                "rosenbrock, served (HTTP), n=4",
                served_rosenbrock,
                {"x": np.array([-1.2, 1.0, 0.5, 2.0]), "a": 1.0, "b": 100.0},
                "x",
                "loss",
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short runs (smoke test of the script)"
    )
    parser.add_argument(
        "--no-served", action="store_true", help="skip the served (HTTP) case"
    )
    args = parser.parse_args()
    seconds = 1.5 if args.quick else 12.0  # per case, all three methods

    old_cwd = os.getcwd()
    scratch = tempfile.TemporaryDirectory()
    os.chdir(scratch.name)  # in-process Tesseracts may write run folders
    server = (
        None if args.no_served else Served(EXAMPLES / "rosenbrock" / "tesseract_api.py")
    )
    try:
        served = None if server is None else Tesseract.from_url(server.url)
        rows = []
        for name, t, inputs, x_path, loss in cases(served):
            # the three give the same gradient (sanity check, not timed)
            x = torch.from_numpy(inputs[x_path]).clone().requires_grad_()
            apply_tesseract(t, {**inputs, x_path: x})[loss].backward()
            y = torch.from_numpy(inputs[x_path]).clone().requires_grad_()
            tesseract_torch.apply_tesseract(t, {**inputs, x_path: y})[loss].backward()
            np.testing.assert_array_equal(x.grad.numpy(), y.grad.numpy())

            t_direct, t_ref, t_ours = timeit(
                [
                    direct_step(t, inputs, x_path, loss),
                    torch_step(
                        tesseract_torch.apply_tesseract, t, inputs, x_path, loss
                    ),
                    torch_step(apply_tesseract, t, inputs, x_path, loss),
                ],
                seconds,
            )
            rows.append((name, t_direct, t_ref, t_ours))
    finally:
        if server is not None:
            server.stop()
        os.chdir(old_cwd)
        scratch.cleanup()

    print(
        f"\nforward + backward, median per step (torch {torch.__version__}, {os.cpu_count()} CPUs)\n"
    )
    header = f"{'case':34s} {'direct':>10s} {'tesseract-torch':>16s} {'tess_ad':>10s} {'tess_ad/direct':>15s} {'tess_ad/tt':>11s}"
    print(header)
    print("-" * len(header))
    for name, t_direct, t_ref, t_ours in rows:
        print(
            f"{name:34s} {t_direct * 1e3:8.3f}ms {t_ref * 1e3:14.3f}ms {t_ours * 1e3:8.3f}ms "
            f"{t_ours / t_direct:14.2f}x {t_ours / t_ref:10.2f}x"
        )
    print(
        "\ndirect = apply + vector_jacobian_product on NumPy; tt = tesseract-torch 0.1.0."
    )


if __name__ == "__main__":
    main()
