r"""Run ``tess-ad check`` on every Tesseract in the reference repositories' examples and tests.

tess_ad's own fixtures were written to show what ``tess-ad check`` catches;
the test that it does not false-alarm is Tesseracts nobody here wrote. This
script takes ``examples/`` and ``tests/`` of git repositories (tesseract-core,
tesseract-jax, tesseract-torch: a local checkout, a bare mirror, or a URL,
``DIR[@REF]`` as in ``dev/reference_suites.py``), extracts them into a
temporary directory (nothing is copied into this repository), runs
``python -m tess_ad check FOLDER --json`` on every folder holding a
``tesseract_api.py`` (templates and ``_``-prefixed folders left out), and
prints one Markdown row per Tesseract: the verdict, the calls, and for
anything but "agrees" the first reason (the worst entry, the inconclusive
pairs, or why it could not check: a dependency the Tesseract needs, no
example inputs, nothing differentiable).

Many test Tesseracts ship no example-inputs file: their tests build the
inputs in Python. For those, inputs written here (our own data, modelled on
the values the references' tests use) live under ``--inputs-dir`` (default
``dev/public_inputs``): the Tesseract ``<repo>/<folder>`` (e.g.
``tesseract-jax/tests/pytree_tesseract``) is checked with
``--inputs DIR/<repo>/<folder>.json`` when that file exists, and with its own
inputs otherwise.

The published examples are presumed correct, so a "disagrees" row is either
a false alarm of the checker or a bug in the example; the row's worst entry
is what to read to tell which.

Usage, from the repository root::

    python dev/check_public_examples.py --from-git /path/to/tesseract-core \\
        --from-git /path/to/tesseract-jax --from-git /path/to/tesseract-torch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reference_suites import Unavailable, _git_export, _split_ref


def tesseracts(root: Path) -> list[Path]:
    """Folders under ``root`` holding a ``tesseract_api.py``, templates and ``_*`` left out."""
    found = []
    for api in sorted(root.rglob("tesseract_api.py")):
        parts = api.relative_to(root).parts
        if any(p.startswith(("_", ".")) or p == "templates" for p in parts[:-1]):
            continue
        found.append(api.parent)
    return found


def check(
    folder: Path, timeout: float, inputs: Path | None = None
) -> tuple[str, str, str, float]:
    """``(verdict, calls, reason, seconds)`` of ``tess-ad check FOLDER``.

    Args:
        folder: The Tesseract's folder (also the working directory).
        timeout: Seconds before the check is given up as "timed out".
        inputs: A JSON inputs file passed as ``--inputs``; ``None`` lets
            ``tess-ad check`` find the Tesseract's own.

    Returns:
        The verdict, the first way's calls, the first reason, the seconds taken.
    """
    command = [sys.executable, "-m", "tess_ad", "check", str(folder), "--json"]
    if inputs is not None:
        command += ["--inputs", str(inputs)]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=folder,
        )
    except subprocess.TimeoutExpired:
        return "timed out", "", f"no verdict within {timeout:g} s", timeout
    seconds = time.perf_counter() - start
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"crashed (exit {done.returncode})", "", tail, seconds
    calls = "; ".join(
        f"{w['name']}: {w['calls_text']}" for w in report.get("ways", [])[:1]
    )
    status = report["status"]
    if status == "agrees":
        inconclusive = sorted(
            {
                p["label"]
                for w in report["ways"]
                for p in w["pairs"]
                if p["verdict"] == "inconclusive"
            }
        )
        if inconclusive:
            return (
                "agrees, inconclusive on some",
                calls,
                ", ".join(inconclusive),
                seconds,
            )
        return "agrees", calls, "", seconds
    if status == "disagrees":
        reason = (report["where"] or report["failures"])[0]
        return "DISAGREES", calls, reason, seconds
    errors = report.get("errors") or [{"error": "(no error given)"}]
    return "could not check", calls, str(errors[0]["error"]), seconds


def main() -> int:
    """Check every Tesseract of the given repositories; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from-git",
        action="append",
        required=True,
        metavar="DIR[@REF]",
        help="a git repository whose examples/ and tests/ to check (repeatable)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds per Tesseract"
    )
    parser.add_argument(
        "--inputs-dir",
        type=Path,
        default=Path(__file__).parent / "public_inputs",
        metavar="DIR",
        help="inputs for Tesseracts without their own: DIR/<repo>/<folder>.json "
        "(default: %(default)s)",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tess_ad_public_") as scratch:
        work = Path(scratch)
        for spec in args.from_git:
            location, ref = _split_ref(spec)
            name = Path(location.rstrip("/")).name
            if name in ("repo", ".git"):  # a mirror's or checkout's inner folder
                name = Path(location.rstrip("/")).parent.name.split("+")[-1]
            dest = work / name
            for sub in ("examples", "tests"):
                try:
                    _git_export(location, ref, [sub], dest, work)
                except Unavailable as exc:
                    print(f"{name}: no {sub}/ ({exc})", file=sys.stderr)
            for folder in tesseracts(dest):
                where = f"{name}/{folder.relative_to(dest)}"
                ours = args.inputs_dir / f"{where}.json"
                verdict, calls, reason, seconds = check(
                    folder, args.timeout, ours if ours.is_file() else None
                )
                rows.append((where, verdict, calls, f"{seconds:.1f}", reason))
                print(f"{where}: {verdict}", file=sys.stderr, flush=True)
    print("| Tesseract | verdict | reference calls | s | first reason |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    print()
    print(", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
