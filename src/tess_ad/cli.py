"""The ``tess-ad`` command: check a Tesseract's derivatives every way, side by side.

``tess-ad check TARGET`` loads a Tesseract (a ``tesseract_api.py``, a folder
holding one, or the URL of a served Tesseract) and its example inputs
(``--inputs``, else ``example_inputs.json``, ``test_cases_inputs/``,
``test_cases/``, ``*inputs*.json``), runs the engine of
:mod:`tess_ad._check` (:func:`tess_ad.check_gradients`) and prints its
report: one line per way, the worst entry of each disagreement, notes on
inconclusive pairs, skipped frameworks and errors (``--verbose``: one table
per output/input pair; ``--json``: the whole report, also when the check
could not run; ``--report FILE.html``: a page with heatmaps, written after
the verdict is printed). Exit status: 0 agrees, 1 disagrees, 2 could not check (a bad
target or inputs, or the Tesseract raised; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import traceback
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._check import CheckError, Report, run_check
from ._check_report import FRAMEWORK_WAYS


class Method(str, Enum):
    """The reference's finite-difference method (stochastic is refused, with the reason)."""

    central = "central"
    richardson = "richardson"
    forward = "forward"
    stochastic = "stochastic"


class Framework(str, Enum):
    """A framework way."""

    jax = "jax"
    torch = "torch"


class Endpoint(str, Enum):
    """One of the Tesseract's own gradient endpoints."""

    jacobian = "jacobian"
    vjp = "vjp"
    jvp = "jvp"


app = typer.Typer(
    help="Differentiate Tesseracts from JAX and PyTorch, and check their gradients.",
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"tess-ad {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Differentiate Tesseracts from JAX and PyTorch, and check their gradients."""


def _way_verdict(report: Mapping[str, Any], way: dict) -> str:
    """One way's verdict over every output/input pair, for the summary."""
    if way["error"] is not None:
        return "[red]error (below)[/red]"
    if way["name"] == report["reference"]:
        return "reference"
    pairs = way["pairs"]
    if not pairs:
        return "not compared"
    bad = [p["label"] for p in pairs if p["verdict"] == "disagrees"]
    if bad and way["name"] in FRAMEWORK_WAYS:
        # a probe is compared once per path: count the probes
        def probe(pair: dict) -> str:
            vjp = pair["output"].startswith("VJP probe ")
            return pair["output"] if vjp else pair["input"]

        wrong = {probe(p) for p in pairs if p["verdict"] == "disagrees"}
        every = {probe(p) for p in pairs}
        return f"[bold red]DISAGREES[/bold red] {len(wrong)} of {len(every)} probes"
    if bad:
        more = f" +{len(bad) - 1}" if len(bad) > 1 else ""
        return f"[bold red]DISAGREES[/bold red] {bad[0]}{more}"
    if any(p["verdict"] == "inconclusive" for p in pairs):
        return "[yellow]inconclusive[/yellow]"
    return "[green]agrees[/green]"


def print_report(report: Report, console: Console, verbose: bool = False) -> None:
    """A compact summary (one line per way); per-pair tables with ``verbose``."""
    console.print(
        f"tess-ad check {report['target']}\ninputs: {report['inputs_file']}",
        highlight=False,
    )
    summary = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("way", "calls", "seconds", "verdict"):
        summary.add_column(col, overflow="fold")
    for w in report["ways"]:
        summary.add_row(
            w["name"],
            w["calls_text"],
            f"{w['seconds']:.2f}",
            _way_verdict(report, w),
        )
    console.print(summary)
    if verbose:
        _print_pairs(report, console)
    _print_verdict(report, console, verbose)


_VERDICT = {
    "agrees": "[green]agrees[/green]",
    "inconclusive": "[yellow]inconclusive[/yellow]",
    "disagrees": "[bold red]DISAGREES[/bold red]",
}


def _print_pairs(report: Mapping[str, Any], console: Console) -> None:
    """Each way's comparisons: per output/input pair, or per probe for a framework."""
    for w in report["ways"]:
        console.print(f"{w['name']}: {w['via']}", highlight=False)
    for w in report["ways"]:
        if w["name"] == report["reference"] or not w["pairs"]:
            continue
        table = Table(title=w["name"], title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("compared", "max abs diff", "max rel diff", "verdict"):
            table.add_column(col, overflow="fold")
        for pair in w["pairs"]:
            table.add_row(
                pair["label"],
                f"{pair['max_abs_diff']:.2e}",
                f"{pair['max_rel_diff']:.2e}",
                _VERDICT[pair["verdict"]],
            )
        console.print(table)


def _print_verdict(report: Report, console: Console, verbose: bool = False) -> None:
    """Notes (skipped ways, inconclusive pairs, errors) and the verdict.

    A failed check names the worst entry of each way's first disagreement
    (``verbose``: of every disagreement).
    """
    within = f"{report['k']:g} x the reference's estimated error" + (
        f" + rtol={report['rtol']:g}" if report["rtol"] is not None else ""
    )
    inconclusive = report.inconclusive
    if inconclusive:
        console.print(
            f"[yellow]inconclusive[/yellow] on {', '.join(inconclusive)}: the "
            "finite-difference reference is too noisy there to tell a right "
            "gradient from a 10% wrong one. Try --method richardson, other "
            "inputs, or a float64 build of the Tesseract."
        )
    frameworks = [w["name"] for w in report["ways"] if w["name"] in FRAMEWORK_WAYS]
    if frameworks and report.get("adapters_via") == "finite differences":
        console.print(
            f"{' and '.join(frameworks)} go through finite differences (the "
            "Tesseract has no gradient endpoints): checked to reproduce them "
            f"along {report['probes']} random directions.",
            highlight=False,
        )
    for skip in report["skipped"]:
        console.print(f"skipped {skip['way']}: {skip['reason']}", highlight=False)
    for err in report["errors"]:
        console.print(
            f"[bold red]error[/bold red] in {err['way']}: {escape(err['error'])}",
            highlight=False,
        )
    for hint in report.hints:  # once, however many ways it explains
        console.print(f"hint: {escape(hint)}", highlight=False)
    if report["status"] == "error":
        console.print(
            "[bold red]COULD NOT CHECK[/bold red]: the Tesseract raised (above)."
        )
    elif report["ok"]:
        console.print(f"[bold green]OK[/bold green]: every way agrees within {within}")
    else:
        console.print(f"[bold red]FAILED[/bold red] (within {within}):")
        lines = (
            [f"  - {line}" for line in report.where or report.failures]
            if verbose
            else _worst_per_way(report)
        )
        for line in lines:
            console.print(line, highlight=False)


def _worst_per_way(report: Report) -> list[str]:
    """The first disagreement of each way (all of them are in --verbose and --json).

    When a Tesseract endpoint disagrees, the framework ways (which go through
    those endpoints) disagree with it; a line says so, so the reader looks at
    the endpoint first.
    """
    lines = report.where or report.failures
    out = []
    bad_ways = []
    more = 0
    for way in report["ways"]:
        mine = [line for line in lines if line.startswith(f"{way['name']}: ")] or [
            line for line in lines if line.startswith(f"{way['name']} disagrees")
        ]
        if mine:
            bad_ways.append(way["name"])
            out.append(f"  - {mine[0]}")
            more += len(mine) - 1
    if more:
        out.append(f"  (and {more} more like these: --verbose or --json)")
    endpoints = [w for w in bad_ways if w.endswith("endpoint")]
    frameworks = [w for w in bad_ways if w in FRAMEWORK_WAYS]
    if endpoints and frameworks and report.get("adapters_via") == "own endpoints":
        use, follow = (
            ("uses", "it follows") if len(frameworks) == 1 else ("use", "they follow")
        )
        out.append(
            f"  ({' and '.join(frameworks)} {use} the Tesseract's endpoints: "
            f"{follow} the {endpoints[0]})"
        )
    return out


@app.command()
def check(
    target: Annotated[
        str, typer.Argument(help="tesseract_api.py, a folder holding one, or a URL.")
    ],
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs",
            help="JSON inputs (default: example_inputs.json beside the Tesseract, "
            "then test_cases_inputs/, test_cases/, *inputs*.json).",
        ),
    ] = None,
    method: Annotated[
        Method,
        typer.Option(
            help="Finite-difference method of the reference: central, richardson "
            "or forward (stochastic is refused: its estimates are random)."
        ),
    ] = Method.central,
    inputs_paths: Annotated[
        list[str] | None,
        typer.Option(
            "--inputs-paths",
            "--input-paths",
            help="Differentiate w.r.t. these inputs (default: all).",
        ),
    ] = None,
    outputs_paths: Annotated[
        list[str] | None,
        typer.Option(
            "--outputs-paths",
            "--output-paths",
            help="Differentiate these outputs (default: all).",
        ),
    ] = None,
    rtol: Annotated[
        float | None,
        typer.Option(
            help="Extra tolerance, relative to each block's largest entry, on top "
            "of the reference's estimated error (default: none)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.")
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar of the FD sweep (default: on a terminal, for long sweeps).",
        ),
    ] = None,
    frameworks: Annotated[
        list[Framework] | None,
        typer.Option(
            "--frameworks",
            help="Framework ways to run: jax, torch (default: both; one not "
            "installed is skipped with a note).",
        ),
    ] = None,
    eps: Annotated[
        float | None,
        typer.Option(help="Absolute step of the reference (default: scale-aware)."),
    ] = None,
    endpoints: Annotated[
        list[Endpoint] | None,
        typer.Option(
            "--endpoints",
            help="The Tesseract's own endpoints to check: jacobian, vjp, jvp "
            "(default: all it has).",
        ),
    ] = None,
    probes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Random cotangents and tangents each framework way is checked along.",
        ),
    ] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the probes.")] = 0,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also one table per output/input pair."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    html_report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write a self-contained HTML page: the summary and, per "
            "output/input pair, heatmaps of the reference Jacobian and each way's "
            "difference from it (needs matplotlib).",
        ),
    ] = None,
) -> None:
    """Compare a Tesseract's derivatives four ways; exit 1 if any disagree."""
    console = Console()
    try:
        if html_report is not None:
            _can_write_report(html_report)
        report = run_check(
            target,
            inputs,
            method.value,
            inputs_paths,
            outputs_paths,
            rtol,
            frameworks=tuple(f.value for f in frameworks or Framework),
            progress=progress,
            eps=eps,
            endpoints=tuple(e.value for e in endpoints or Endpoint),
            probes=probes,
            seed=seed,
        )
    except CheckError as exc:
        if debug:
            traceback.print_exc()
        Console(stderr=True).print(
            f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        if as_json:  # a JSON document on stdout whatever happened
            document = {
                "target": target,
                "status": "error",
                "ok": False,
                "errors": [{"way": None, "error": exc.message, "hint": exc.hint}],
            }
            print(json.dumps(document, indent=2))
        if html_report is not None:  # a page that says why, where one can be written
            from ._check_html import render_error

            with contextlib.suppress(OSError):
                html_report.write_text(render_error(target, str(exc)), encoding="utf-8")
        raise typer.Exit(2) from None
    if as_json:
        print(report.to_json())
    else:
        print_report(report, console, verbose)
    if html_report is not None:  # after the verdict, which a failure here cannot lose
        _write_report(html_report, report, console, quiet=as_json)
    raise typer.Exit({"agrees": 0, "disagrees": 1}.get(report["status"], 2))


def _write_report(path: Path, report: Report, console: Console, quiet: bool) -> None:
    """Write the page; if it cannot be drawn or written, say so and leave no stale page."""
    try:
        page = report.to_html()
        path.write_text(page, encoding="utf-8")
    except Exception as exc:
        Console(stderr=True).print(
            f"[red]error:[/red] could not write the report {path}: "
            f"{escape(type(exc).__name__)}: {escape(str(exc))} (the verdict above "
            "stands)",
            highlight=False,
            soft_wrap=True,
        )
        with contextlib.suppress(OSError):
            from ._check_html import render_error

            path.write_text(
                render_error(
                    str(report["target"]), f"the page could not be drawn: {exc}"
                ),
                encoding="utf-8",
            )
        return
    if not quiet:
        console.print(f"report: {path}", highlight=False, soft_wrap=True)


def _can_write_report(path: Path) -> None:
    """Fail before the check, not after it, when ``--report`` cannot be written."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise CheckError(
            "--report needs matplotlib, which is not installed: "
            "pip install 'tess-ad[report]'"
        )
    if not path.parent.is_dir():
        raise CheckError(f"--report: no such folder {path.parent} (create it first)")
    if path.is_dir():
        raise CheckError(
            f"--report: {path} is a folder; give a file name, e.g. {path / 'check.html'}"
        )
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise CheckError(
            f"--report: cannot write {path} (no permission); choose another place"
        )


def main() -> None:
    """Entry point of the ``tess-ad`` script."""
    app()
