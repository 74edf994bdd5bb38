"""``tess-ad check`` against ``tesseract-runtime check-gradients``: calls, seconds, verdicts.

Both commands run as a user runs them (a subprocess each, at their defaults)
on the example Tesseracts and on test fixtures whose gradients are right or
wrong in known ways. Endpoint calls are counted by running each Tesseract
through a generated ``tesseract_api.py`` that wraps its endpoints with
counters (the module's own internal calls, such as a drop-in
finite-difference helper calling ``apply``, are not endpoint calls and are not
counted). ``tess-ad check`` counts its own calls too; the two agree.

Prints two Markdown tables: calls and seconds of each command per Tesseract,
and whether each caught the wrong ones and passed the right ones.

Run from the repository root (a few minutes)::

    python benchmarks/bench_check.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# tesseract-core's command, beside this Python (its venv need not be activated)
_BESIDE = Path(sys.executable).parent / "tesseract-runtime"
RUNTIME = (
    str(_BESIDE) if _BESIDE.exists() else (shutil.which("tesseract-runtime") or "")
)

# (folder, whether its gradients are right, what is special about it)
CASES = [
    ("examples/rosenbrock", True, "analytic endpoints"),
    ("examples/nested", True, "apply only, nested inputs"),
    ("examples/float32", True, "float32"),
    ("examples/meshstats_fd", True, "drop-in FD endpoints, validator"),
    ("examples/scales", True, "inputs from 3e-6 to 1.5e6"),
    ("tests/tesseracts/float32_offset", True, "float32, outputs near 2e3"),
    ("tests/tesseracts/wrong_gradient", False, "VJP and JVP 15% wrong"),
    ("tests/tesseracts/wrong_jvp", False, "JVP wrong, VJP right"),
    ("tests/tesseracts/vjp_off_in_one_entry", False, "VJP 0.1% wrong in one entry"),
    ("tests/tesseracts/defaulted_wrong", False, "VJP wrong in a defaulted input"),
]

SHIM = """
import functools, importlib.util, os
_spec = importlib.util.spec_from_file_location("_counted_api", {api!r})
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({{k: v for k, v in vars(_module).items() if not k.startswith("__")}})


def _counted(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with open(os.environ["TESS_AD_BENCH_COUNTS"], "a") as f:
            f.write(name + "\\n")
        return fn(*args, **kwargs)
    return wrapper


for _name in ("apply", "jacobian", "jacobian_vector_product", "vector_jacobian_product"):
    if _name in globals():
        globals()[_name] = _counted(_name, globals()[_name])
"""

LABELS = {
    "apply": "apply",
    "jacobian": "jacobian",
    "vector_jacobian_product": "VJP",
    "jacobian_vector_product": "JVP",
}


def run(
    command: list[str], env: dict[str, str], counts: Path
) -> tuple[int, float, Counter]:
    counts.write_text("")
    start = time.perf_counter()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    seconds = time.perf_counter() - start
    calls = Counter(line for line in counts.read_text().splitlines() if line)
    return done.returncode, seconds, calls


def calls_text(calls: Counter) -> str:
    return ", ".join(f"{calls[k]} {LABELS[k]}" for k in LABELS if calls[k]) or "0"


def main() -> None:
    rows, verdicts = [], []
    with tempfile.TemporaryDirectory(prefix="tess_ad_bench_check_") as scratch:
        scratch_path = Path(scratch)
        counts = scratch_path / "counts.txt"
        env = {**os.environ, "TESS_AD_BENCH_COUNTS": str(counts)}
        for folder, correct, what in CASES:
            source = ROOT / folder
            shim_dir = scratch_path / source.name
            shim_dir.mkdir()
            (shim_dir / "tesseract_api.py").write_text(
                SHIM.format(api=str(source / "tesseract_api.py"))
            )
            inputs = source / "example_inputs.json"
            ours = run(
                [
                    sys.executable,
                    "-m",
                    "tess_ad",
                    "check",
                    str(shim_dir),
                    "--inputs",
                    str(inputs),
                    "--no-progress",
                ],
                env,
                counts,
            )
            theirs = run(
                [RUNTIME, "check-gradients", f"@{inputs}"],
                {**env, "TESSERACT_API_PATH": str(shim_dir / "tesseract_api.py")},
                counts,
            )
            rows.append(
                (
                    folder.split("/")[-1],
                    what,
                    calls_text(ours[2]),
                    f"{ours[1]:.1f}",
                    calls_text(theirs[2]),
                    f"{theirs[1]:.1f}",
                )
            )

            def verdict(code: int, calls: Counter, correct: bool = correct) -> str:
                endpoints = any(calls[k] for k in LABELS if k != "apply")
                if not endpoints and code != 0:  # no gradient endpoints to compare
                    return f"n/a, apply only (exit {code})"
                if correct:
                    return "passes" if code == 0 else f"FALSE ALARM (exit {code})"
                if code == 0:
                    return "MISSED"
                return "caught" if code == 1 else f"could not check (exit {code})"

            verdicts.append(
                (
                    folder.split("/")[-1],
                    what,
                    verdict(ours[0], ours[2]),
                    verdict(theirs[0], theirs[2]),
                )
            )
    print("\n### calls and seconds (one run each, subprocess start included)\n")
    print("| Tesseract | what | tess-ad check calls | s | check-gradients calls | s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n### verdicts\n")
    print("| Tesseract | what | tess-ad check | check-gradients |")
    print("|---|---|---|---|")
    for row in verdicts:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
