"""``tess-ad check`` against ``tesseract-runtime check-gradients``: calls, seconds, verdicts.

Both commands run as a user runs them (a subprocess each, at their defaults)
on the example Tesseracts and on test fixtures whose gradients are right or
wrong in known ways. Endpoint calls are counted by running each Tesseract
through a generated ``tesseract_api.py`` that wraps its endpoints with
counters (the module's own internal calls, such as a drop-in
finite-difference helper calling ``apply``, are not endpoint calls and are not
counted). ``tess-ad check`` counts its own calls too; the two agree.

Each command runs ``--repeats`` times per Tesseract (default 3), the two
interleaved (ours, theirs, ours, theirs, ...) so that a slow spell of this
shared machine falls on both. Prints two Markdown tables: per Tesseract, the
calls of each command (the same in every run, or the table says otherwise),
the median seconds of each and the median of the per-pair ratios; and whether
each command caught the wrong gradients and passed the right ones (in every
run, or the table says otherwise).

Run from the repository root (several minutes)::

    python benchmarks/bench_check.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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


def verdict(code: int, calls: Counter, correct: bool) -> str:
    """What an exit status means for a Tesseract whose gradients are right (or not)."""
    endpoints = any(calls[k] for k in LABELS if k != "apply")
    if not endpoints and code != 0:  # no gradient endpoints to compare
        return f"n/a, apply only (exit {code})"
    if correct:
        return "passes" if code == 0 else f"FALSE ALARM (exit {code})"
    if code == 0:
        return "MISSED"
    return "caught" if code == 1 else f"could not check (exit {code})"


def summarize(runs: list[tuple[int, float, Counter]], correct: bool) -> tuple[str, str]:
    """The calls and verdict of repeated runs: one text when all runs agree."""
    calls = {calls_text(c) for _, _, c in runs}
    verdicts = {verdict(code, c, correct) for code, _, c in runs}
    return (
        calls.pop() if len(calls) == 1 else "varies: " + " / ".join(sorted(calls)),
        verdicts.pop()
        if len(verdicts) == 1
        else "varies: " + " / ".join(sorted(verdicts)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per command (>= 1)"
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
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
            ours_command = [
                sys.executable,
                "-m",
                "tess_ad",
                "check",
                str(shim_dir),
                "--inputs",
                str(inputs),
                "--no-progress",
            ]
            theirs_command = [RUNTIME, "check-gradients", f"@{inputs}"]
            theirs_env = {
                **env,
                "TESSERACT_API_PATH": str(shim_dir / "tesseract_api.py"),
            }
            ours, theirs = [], []
            for _ in range(args.repeats):  # interleaved: A, B, A, B, ...
                ours.append(run(ours_command, env, counts))
                theirs.append(run(theirs_command, theirs_env, counts))
            ratio = statistics.median(
                a[1] / b[1] for a, b in zip(ours, theirs, strict=True)
            )
            our_calls, our_verdict = summarize(ours, correct)
            their_calls, their_verdict = summarize(theirs, correct)
            name = folder.split("/")[-1]
            rows.append(
                (
                    name,
                    what,
                    our_calls,
                    f"{statistics.median(r[1] for r in ours):.1f}",
                    their_calls,
                    f"{statistics.median(r[1] for r in theirs):.1f}",
                    f"{ratio:.1f}x",
                )
            )
            verdicts.append((name, what, our_verdict, their_verdict))
    print(
        f"\n### calls and seconds ({args.repeats} interleaved runs each; medians, "
        "subprocess start included)\n"
    )
    print(
        "| Tesseract | what | tess-ad check calls | s | check-gradients calls | s "
        "| time ratio (tess-ad / check-gradients) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n### verdicts (the same in all {args.repeats} runs unless it says so)\n")
    print("| Tesseract | what | tess-ad check | check-gradients |")
    print("|---|---|---|---|")
    for row in verdicts:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
