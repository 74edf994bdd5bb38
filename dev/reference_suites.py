"""Run tesseract-jax's and tesseract-torch's own test suites against tess_ad.

tess_ad claims to be a drop-in for ``tesseract_jax.apply_tesseract`` and
``tesseract_torch.apply_tesseract``. The most direct check of that claim is the
references' own ``tests/``, run with their imports swapped to ``tess_ad.jax`` and
``tess_ad.torch``. This script does that, in a temporary directory, and compares
the outcome with the committed list of known differences,
``dev/reference_exceptions.toml``:

* a test that fails and is not listed there is a regression (or a new reference
  test tess_ad does not pass yet);
* a listed test that now passes must be taken off the list, so the list stays
  honest;
* an error in a fixture's setup or in collection is never covered by the list
  (it is the environment, e.g. no ``tesseract-runtime`` on ``PATH``).

Either makes the script exit 1, after a table of every failure and every listed
test. Nothing fetched is ever copied into the repository.

Where the tests come from:

* by default, the sdists of the *installed* tesseract-jax and tesseract-torch on
  the package index (``pip download --no-deps --no-binary :all:``). Their
  ``tests/`` hold the test modules but not ``conftest.py`` nor the test
  Tesseracts the fixtures load (true of tesseract-jax 0.4.0 and tesseract-torch
  0.1.0), so those are completed from the project's git repository at the tag
  ``v<version>`` (``--repo``; GitHub by default), after checking that the
  sdist's test modules are the tagged ones;
* ``--from-git DIR[@REF]`` takes ``tests/`` and ``pyproject.toml`` from a git
  repository (a local checkout, a bare mirror, or a URL) at REF (default
  ``HEAD``): the way to run a reference's current main.

How the imports are swapped (the rewritten copy is kept with ``--keep``):

* ``from tesseract_jax import a, b`` binds each name to ``tess_ad.jax``'s, or to a
  stub that raises ``MissingInTessAd`` when used, so a name tess_ad lacks fails
  the tests that use it, one by one, instead of the whole module;
* ``import tesseract_jax [as t]`` binds the module ``tess_ad.jax``, so attribute
  uses go to tess_ad;
* ``from tesseract_jax.<module> import x`` (a private module of the reference)
  binds a stub that raises ``ReferencePrivateModule`` when used: such tests test
  the reference's internals and are listed as intended exceptions.

The suite runs with the current interpreter (``PYTHONPATH`` decides which
tess_ad is imported) and the reference's own pytest settings
(``[tool.pytest.ini_options]`` of its ``pyproject.toml``, ``filterwarnings =
error`` included, without its ``--typeguard-packages`` option).

Usage (from the repository root)::

    python dev/reference_suites.py                     # both suites, installed versions
    python dev/reference_suites.py --suite jax -- -k sow
    python dev/reference_suites.py --from-git /path/to/tesseract-jax --suite jax
    python dev/reference_suites.py --from-git /path/to/tesseract-jax@v0.4.0

Exit status: 0 as expected, 1 unexpected outcome, 2 usage error, 75 the tests
could not be obtained (package index or git repository unreachable).
"""

from __future__ import annotations

import argparse
import ast
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
DEFAULT_EXPECTATIONS = HERE / "reference_exceptions.toml"
EX_UNAVAILABLE = 75


@dataclass(frozen=True)
class Suite:
    """One reference package whose tests are run against a tess_ad adapter."""

    name: str  # "jax" or "torch": the key in the expectations file
    package: str  # distribution name on the package index
    module: str  # the reference's import name
    repo: str  # where its tags live when the sdist's tests are incomplete

    @property
    def adapter(self) -> str:
        """The tess_ad module that stands in for the reference."""
        return f"tess_ad.{self.name}"


SUITES = {
    "jax": Suite(
        "jax",
        "tesseract-jax",
        "tesseract_jax",
        "https://github.com/pasteurlabs/tesseract-jax",
    ),
    "torch": Suite(
        "torch",
        "tesseract-torch",
        "tesseract_torch",
        "https://github.com/pasteurlabs/tesseract-torch",
    ),
}


class Unavailable(Exception):
    """The reference tests could not be obtained (network, missing repository)."""


# ---------------------------------------------------------------------------
# Obtaining the tests
# ---------------------------------------------------------------------------


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _split_ref(spec: str) -> tuple[str, str]:
    """``DIR@REF`` -> (DIR, REF); without ``@REF``, HEAD (``git@host:path`` is no ref)."""
    location, sep, ref = spec.rpartition("@")
    if sep and location and "/" not in ref and ":" not in ref:
        return location, ref
    return spec, "HEAD"


def _git_export(
    location: str, ref: str, paths: list[str], dest: Path, work: Path
) -> None:
    """Write ``paths`` of ``location`` (a local git dir or a URL) at ``ref`` under ``dest``."""
    if not Path(location).exists():  # a URL: a shallow clone of just that ref
        clone = work / "clone"
        shutil.rmtree(clone, ignore_errors=True)
        branch = [] if ref == "HEAD" else ["--branch", ref]
        res = _run(
            [
                "git",
                "clone",
                "-q",
                "--bare",
                "--depth",
                "1",
                *branch,
                location,
                str(clone),
            ]
        )
        if res.returncode:
            raise Unavailable(
                f"git clone {location} at {ref} failed: {res.stderr.strip()}"
            )
        location = str(clone)
    present = _run(["git", "-C", location, "ls-tree", "--name-only", ref, *paths])
    if present.returncode:
        raise Unavailable(f"{location} has no {ref}: {present.stderr.strip()}")
    archive = subprocess.run(
        ["git", "-C", location, "archive", ref, *present.stdout.split()],
        capture_output=True,
    )
    if archive.returncode:
        raise Unavailable(
            f"git archive {ref} in {location} failed: {archive.stderr.decode().strip()}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")


def _git_package(location: str, ref: str, work: Path) -> str | None:
    """Which reference a repository holds: the suite name, from its package directory."""
    probe = work / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    _git_export(location, ref, ["pyproject.toml"], probe, work)
    text = (probe / "pyproject.toml").read_text()
    for suite in SUITES.values():
        if re.search(rf'^name\s*=\s*"{suite.package}"', text, re.M):
            return suite.name
    return None


def from_sdist(suite: Suite, dest: Path, *, work: Path, repo: str | None) -> str:
    """The installed version's sdist tests, completed from its git tag if needed."""
    try:
        version = metadata.version(suite.package)
    except metadata.PackageNotFoundError as exc:
        raise Unavailable(
            f"{suite.package} is not installed, so there is no version to test against; "
            f"install it or use --from-git"
        ) from exc
    dl = work / f"sdist-{suite.name}"
    res = _run(
        [
            *(sys.executable, "-m", "pip", "download", "-q", "--no-deps"),
            *("--no-binary", ":all:", "-d", str(dl), f"{suite.package}=={version}"),
        ],
        timeout=300,
    )
    if res.returncode:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise Unavailable(
            f"pip download {suite.package}=={version} failed (package index unreachable?): {last}"
        )
    (archive,) = dl.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(dl, filter="data")
    (root,) = (p for p in dl.iterdir() if p.is_dir())
    if not (root / "tests").is_dir():
        raise Unavailable(f"the sdist of {suite.package} {version} has no tests/")
    shutil.copytree(root / "tests", dest / "tests")
    shutil.copy(root / "pyproject.toml", dest / "pyproject.toml")
    origin = f"sdist {archive.name}"
    if not (dest / "tests" / "conftest.py").exists():
        tag = f"v{version}"
        location = repo or suite.repo
        print(
            f"  the sdist's tests/ has no conftest.py nor test Tesseracts: "
            f"completing them from {location} at {tag}"
        )
        tagged = work / f"tag-{suite.name}"
        _git_export(location, tag, ["tests"], tagged, work)
        for path in sorted((dest / "tests").rglob("*.py")):
            rel = path.relative_to(dest)
            if path.read_bytes() != (tagged / rel).read_bytes():
                raise Unavailable(
                    f"{rel} of the sdist differs from {tag} in {location}"
                )
        shutil.copytree(tagged / "tests", dest / "tests", dirs_exist_ok=True)
        origin += f" + {location}@{tag} (conftest.py, test Tesseracts)"
    return f"{suite.package} {version}: {origin}"


def from_git(suite: Suite, location: str, ref: str, dest: Path, *, work: Path) -> str:
    """``tests/`` and ``pyproject.toml`` of a git repository at ``ref``."""
    _git_export(location, ref, ["tests", "pyproject.toml"], dest, work)
    if Path(location).exists():
        rev = _run(["git", "-C", location, "rev-parse", "--short", ref]).stdout.strip()
    else:
        rev = ref
    return f"{suite.package}: git {location} at {ref} ({rev})"


# ---------------------------------------------------------------------------
# Rewriting the imports
# ---------------------------------------------------------------------------

SHIM = '''\
"""Written by tess_ad's dev/reference_suites.py: binds the references' names to tess_ad's."""

import importlib


class MissingInTessAd(Exception):
    """A public name of the reference that tess_ad's adapter does not have."""


class ReferencePrivateModule(Exception):
    """A name from one of the reference's private modules."""


class _Stub:
    def __init__(self, error, message):
        object.__setattr__(self, "_error", error)
        object.__setattr__(self, "_message", message)

    def _raise(self, *args, **kwargs):
        raise self._error(self._message)

    __call__ = _raise

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        self._raise()

    def __setattr__(self, name, value):
        self._raise()

    def __repr__(self):
        return f"<stub: {self._message}>"


def public(framework, *names):
    module = importlib.import_module(f"tess_ad.{framework}")
    values = []
    for name in names:
        if hasattr(module, name):
            values.append(getattr(module, name))
        else:
            values.append(_Stub(
                MissingInTessAd,
                f"tess_ad.{framework} has no {name!r} (tesseract_{framework}.{name})",
            ))
    return values[0] if len(values) == 1 else values


def private(framework, module, *names):
    values = [
        _Stub(
            ReferencePrivateModule,
            f"tesseract_{framework}.{module}.{name} is a private module of the reference, "
            f"not part of the interface tess_ad reproduces",
        )
        for name in names
    ]
    return values[0] if len(values) == 1 else values
'''

PLUGIN = r'''\
"""Written by tess_ad's dev/reference_suites.py: records every test's outcome as JSON."""

import json
import os
import re

_results = {}


def _message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    # tesseract-core puts the endpoint's traceback in the message: keep its end
    cut = text.rfind("Error running Tesseract API")
    if "Traceback (most recent call last)" in text and cut >= 0:
        text = text[cut:]
    text = re.sub(r"for json-or-python\\[.*?\\]\\]\\s*", "", text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:3])[:300]


def pytest_runtest_logreport(report):
    entry = _results.setdefault(report.nodeid, {"outcome": "passed", "message": ""})
    if report.when == "call" and hasattr(report, "wasxfail"):
        entry["outcome"] = "xfailed" if report.skipped else "xpassed"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        entry["message"] = _message(report)
    elif report.failed:
        if entry["outcome"] not in ("failed", "error"):
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["message"] = (f"[{report.when}] " if report.when != "call" else "") + _message(report)


def pytest_collectreport(report):
    if report.failed:
        _results[report.nodeid] = {"outcome": "error", "message": "[collect] " + _message(report)}


def pytest_sessionfinish(session):
    with open(os.environ["TESS_AD_REFSUITE_RESULTS"], "w") as f:
        json.dump(_results, f, indent=1)
'''


def _import_replacement(node: ast.stmt, reference: str, framework: str) -> str | None:
    """The statement that replaces a reference import, or None if it is not one."""
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        mod = node.module
        if mod != reference and not mod.startswith(reference + "."):
            return None
        targets = [a.asname or a.name for a in node.names]
        names = ", ".join(repr(a.name) for a in node.names)
        lhs = targets[0] if len(targets) == 1 else ", ".join(targets)
        if "*" in targets:
            raise SystemExit(f"cannot rewrite 'from {mod} import *'")
        if mod == reference:
            call = f"_refsuite_shim.public({framework!r}, {names})"
        else:
            private = mod[len(reference) + 1 :]
            call = f"_refsuite_shim.private({framework!r}, {private!r}, {names})"
        return f"import _refsuite_shim; {lhs} = {call}"
    if isinstance(node, ast.Import):
        if not any(
            a.name == reference or a.name.startswith(reference + ".")
            for a in node.names
        ):
            return None
        parts = []
        for alias in node.names:
            if alias.name == reference or alias.name.startswith(reference + "."):
                # `import tesseract_jax.primitive` binds `tesseract_jax`; the
                # private attribute then fails where it is used.
                bound = (
                    alias.asname
                    if alias.asname and alias.name == reference
                    else reference
                )
                parts.append(f"import tess_ad.{framework} as {bound}")
            else:
                parts.append(
                    f"import {alias.name}"
                    + (f" as {alias.asname}" if alias.asname else "")
                )
        return "; ".join(parts)
    return None


def rewrite_source(source: str, suite: Suite) -> tuple[str, int]:
    """``source`` with every import of the reference swapped; line numbers are kept."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        new = _import_replacement(node, suite.module, suite.name)
        if new is None:
            continue
        first, last = node.lineno - 1, node.end_lineno - 1
        before = lines[first][: node.col_offset]
        after = lines[last][node.end_col_offset :]
        if before.strip() or after.strip():
            raise SystemExit(
                f"cannot rewrite an import that shares its line: {lines[first]!r}"
            )
        edits.append((first, last, before + new + "\n"))
    for first, last, text in sorted(edits, reverse=True):
        lines[first : last + 1] = [text] + ["\n"] * (last - first)
    return "".join(lines), len(edits)


def rewrite_tree(root: Path, suite: Suite) -> int:
    """Rewrite every module under ``root``; reference names left in strings are printed."""
    count = 0
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        if suite.module not in source:
            continue
        new, n = rewrite_source(source, suite)
        path.write_text(new)
        count += n
    left = [
        f"{p.relative_to(root)}:{i}: {line.strip()}"
        for p in sorted(root.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(rf"\b{suite.module}\b", line) and not line.lstrip().startswith("#")
    ]
    for entry in left:  # strings such as monkeypatch targets: shown, not guessed at
        print(f"  note: reference name left as is: {entry}")
    return count


def write_pytest_config(root: Path, suite: Suite) -> None:
    """The reference's own pytest settings, minus its typeguard instrumentation."""
    settings: dict = {}
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        settings = (
            tomllib.loads(pyproject.read_text())
            .get("tool", {})
            .get("pytest", {})
            .get("ini_options", {})
        )
        pyproject.unlink()
    addopts = settings.get("addopts", [])
    if isinstance(addopts, str):
        addopts = addopts.split()
    addopts = [a for a in addopts if not a.startswith("--typeguard")]
    lines = ["[pytest]", "testpaths = tests", f"addopts = {' '.join(addopts)}"]
    warnings = settings.get("filterwarnings", [])
    if warnings:
        lines.append("filterwarnings =")
        lines += [f"    {w}" for w in warnings]
    markers = settings.get("markers", [])
    if markers:
        lines.append("markers =")
        lines += [f"    {m}" for m in markers]
    (root / "pytest.ini").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
# Expectations and the comparison
# ---------------------------------------------------------------------------


@dataclass
class Expectations:
    """``[<suite>.intended]`` and ``[<suite>.temporary]`` tables: test id pattern -> reason."""

    intended: dict[str, str] = field(default_factory=dict)
    temporary: dict[str, str] = field(default_factory=dict)

    def match(self, test_id: str) -> tuple[str, str, str] | None:
        """(kind, pattern, reason) of the first entry matching ``test_id``."""
        for kind, table in (("intended", self.intended), ("TEMPORARY", self.temporary)):
            for pattern, reason in table.items():
                if _pattern_matches(pattern, test_id):
                    return kind, pattern, reason
        return None


def _pattern_matches(pattern: str, test_id: str) -> bool:
    """Exact ids; ``*`` matches any run of characters (brackets are literal)."""
    if "*" not in pattern:
        return pattern == test_id
    return (
        re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), test_id) is not None
    )


def load_expectations(path: Path, suite: Suite) -> Expectations:
    """The ``[<suite>.intended]`` and ``[<suite>.temporary]`` tables of ``path``."""
    if not path.exists():
        return Expectations()
    data = tomllib.loads(path.read_text()).get(suite.name, {})
    unknown = set(data) - {"intended", "temporary"}
    if unknown:
        raise SystemExit(
            f"{path}: unknown table(s) [{suite.name}.{'/'.join(sorted(unknown))}]"
        )
    return Expectations(dict(data.get("intended", {})), dict(data.get("temporary", {})))


FAILING = ("failed", "error", "xpassed")


def compare(
    results: dict[str, dict], expected: Expectations
) -> tuple[list[tuple], dict[str, int], bool]:
    """Rows of the table, counts of outcomes, and whether everything is as listed."""
    rows = []
    ok = True
    counts: dict[str, int] = {}
    for test_id, res in sorted(results.items()):
        outcome = res["outcome"]
        counts[outcome] = counts.get(outcome, 0) + 1
        listed = expected.match(test_id)
        if outcome == "error":
            # setup, teardown or collection: the environment, never a listed difference
            ok = False
            rows.append(
                (test_id, outcome, "UNEXPECTED (not a test failure)", res["message"])
            )
        elif outcome in FAILING:
            if listed:
                rows.append((test_id, outcome, listed[0], listed[2]))
            else:
                ok = False
                rows.append((test_id, outcome, "UNEXPECTED", res["message"]))
        elif listed and outcome == "passed":
            ok = False
            rows.append(
                (
                    test_id,
                    outcome,
                    f"listed {listed[0]}, NOW PASSES",
                    "take it off the list",
                )
            )
        elif listed:
            rows.append(
                (test_id, outcome, f"listed {listed[0]}", res["message"] or listed[2])
            )
    for table in (expected.intended, expected.temporary):
        for pattern in table:
            if not any(_pattern_matches(pattern, t) for t in results):
                rows.append(
                    (
                        pattern,
                        "-",
                        "listed, not in this suite",
                        "(another version's test?)",
                    )
                )
    return rows, counts, ok


def print_table(rows: list[tuple], width: int = 200) -> None:
    """One line per row, columns aligned, cut at ``width`` characters."""
    if not rows:
        return
    w0 = min(max(len(r[0]) for r in rows), 90)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    for test_id, outcome, status, note in rows:
        line = f"  {test_id:<{w0}}  {outcome:<{w1}}  {status:<{w2}}  {note}"
        print(line[:width])


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def run_suite(suite: Suite, obtain, args, work: Path) -> bool | None:
    """Obtain, rewrite and run one suite; True as expected, False not, None unavailable."""
    root = work / f"suite-{suite.name}"
    print(f"\n=== {suite.package} tests against {suite.adapter} ===")
    try:
        origin = obtain(root)
    except Unavailable as exc:
        print(f"  SKIPPED: {exc}")
        return None
    print(f"  tests from {origin}")
    n = rewrite_tree(root / "tests", suite)
    print(f"  {n} import(s) of {suite.module} rewritten")
    write_pytest_config(root, suite)
    helper = work / "refsuite_helpers"
    helper.mkdir(exist_ok=True)
    (helper / "_refsuite_shim.py").write_text(SHIM)
    (helper / "_refsuite_plugin.py").write_text(PLUGIN)
    results_file = work / f"results-{suite.name}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(helper), env.get("PYTHONPATH", "")] if p
    )
    env["TESS_AD_REFSUITE_RESULTS"] = str(results_file)
    # the fixtures start `tesseract-runtime serve`: the one next to this interpreter
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), env.get("PATH", "")]
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "_refsuite_plugin",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    cmd += ["--tb=line", "-rN"]
    try:
        import pytest_timeout  # noqa: F401

        cmd += [f"--timeout={args.timeout}"]
    except ImportError:
        pass
    cmd += args.pytest_args
    start = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=root, env=env, capture_output=not args.verbose, text=True
    )
    secs = time.monotonic() - start
    if not results_file.exists():
        print(
            proc.stdout[-3000:] if proc.stdout else "",
            proc.stderr[-3000:] if proc.stderr else "",
        )
        print(f"  pytest wrote no results (exit {proc.returncode})")
        return False
    results = json.loads(results_file.read_text())
    expected = load_expectations(args.expectations, suite)
    rows, counts, ok = compare(results, expected)
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    print(f"  {len(results)} tests in {secs:.0f} s: {summary}")
    print_table(rows)
    print(f"  => {suite.name}: {'as expected' if ok else 'NOT AS EXPECTED'}")
    if args.keep:
        print(
            f"  rewritten suite kept in {root} (rerun: cd there; PYTHONPATH={helper}:$PYTHONPATH pytest)"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments after `--` go to pytest.",
    )
    parser.add_argument(
        "--suite", action="append", choices=sorted(SUITES), help="default: both"
    )
    parser.add_argument(
        "--from-git",
        action="append",
        default=[],
        metavar="DIR[@REF]",
        help="take a reference's tests/ from this git repository (dir, bare mirror or URL) at REF (default HEAD)",
    )
    parser.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="DIR",
        help="git repository of a reference, for completing its sdist's tests/ at the tag v<version> (default: GitHub)",
    )
    parser.add_argument("--expectations", type=Path, default=DEFAULT_EXPECTATIONS)
    parser.add_argument(
        "--timeout",
        type=int,
        default=300,
        help="per test, when pytest-timeout is installed",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the rewritten suites and print where"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show pytest's own output"
    )
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    else:
        extra = []
    args = parser.parse_args(argv)
    args.pytest_args = extra
    names = args.suite or sorted(SUITES)

    work = Path(tempfile.mkdtemp(prefix="tess_ad_refsuites."))
    try:
        git_sources: dict[str, tuple[str, str]] = {}
        repos: dict[str, str] = {}
        for spec, table in [(s, git_sources) for s in args.from_git] + [
            (s, repos) for s in args.repo
        ]:
            location, ref = _split_ref(spec)
            try:
                name = _git_package(
                    location, ref if table is git_sources else "HEAD", work
                )
            except Unavailable as exc:
                print(f"{spec}: {exc}")
                return EX_UNAVAILABLE
            if name is None:
                print(
                    f"{spec}: neither tesseract-jax nor tesseract-torch (read its pyproject.toml)"
                )
                return 2
            table[name] = (location, ref) if table is git_sources else location
        if args.from_git and not args.suite:
            names = sorted(git_sources)
        outcomes = {}
        for name in names:
            suite = SUITES[name]
            if name in git_sources:
                location, ref = git_sources[name]
                obtain = functools.partial(from_git, suite, location, ref, work=work)
            else:
                obtain = functools.partial(
                    from_sdist, suite, work=work, repo=repos.get(name)
                )
            outcomes[name] = run_suite(suite, obtain, args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for name, ok in outcomes.items():
        state = {
            None: "SKIPPED (tests unavailable)",
            True: "as expected",
            False: "NOT AS EXPECTED",
        }[ok]
        print(f"{name:6} {state}")
    if any(ok is False for ok in outcomes.values()):
        print(
            textwrap.fill(
                f"An unlisted failure is a regression or a new reference test: fix tess_ad, or list it "
                f"in {args.expectations.name} with a one-line reason. A listed test that passes now "
                f"must come off the list.",
                88,
            )
        )
        return 1
    if all(ok is None for ok in outcomes.values()):
        return EX_UNAVAILABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
