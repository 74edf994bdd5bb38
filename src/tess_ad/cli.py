"""The ``tess-ad`` command: check a Tesseract's derivatives every way, side by side.

``tess-ad check TARGET`` loads a Tesseract (a ``tesseract_api.py``, a folder
holding one, or the URL of a served Tesseract) and its example inputs
(``--inputs``, else ``example_inputs.json``, ``test_cases_inputs/``,
``test_cases/``, ``*inputs*.json``), runs the engine of
:mod:`tess_ad._check` (:func:`tess_ad.check_gradients`) and prints its
report: one line per way, the worst entry of each disagreement, notes on
inconclusive pairs, skipped frameworks and errors (``--verbose``: one table
per output/input pair; ``--json``: the whole report, also when the check
could not run). Exit status: 0 agrees, 1 disagrees, 2 could not check (a bad
target or inputs, or the Tesseract raised; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._check import CheckError, Report, run_check

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
    _print_verdict(report, console)


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


def _print_verdict(report: Report, console: Console) -> None:
    """Notes (skipped ways, inconclusive pairs, errors) and the verdict."""
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
    frameworks = [w["name"] for w in report["ways"] if w["name"] in ("jax", "torch")]
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
        for line in report["where"] or report["failures"]:
            console.print(f"  - {line}", highlight=False)


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
        str,
        typer.Option(
            help="Finite-difference method of the reference: central, richardson "
            "or forward (stochastic is refused: its estimates are random)."
        ),
    ] = "central",
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
        list[str] | None,
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
        list[str] | None,
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
) -> None:
    """Compare a Tesseract's derivatives four ways; exit 1 if any disagree."""
    console = Console()
    try:
        report = run_check(
            target,
            inputs,
            method,
            inputs_paths,
            outputs_paths,
            rtol,
            frameworks=tuple(frameworks) if frameworks else ("jax", "torch"),
            progress=progress,
            eps=eps,
            endpoints=tuple(endpoints) if endpoints else ("jacobian", "vjp", "jvp"),
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
        raise typer.Exit(2) from None
    if as_json:
        print(report.to_json())
    else:
        print_report(report, console, verbose)
    raise typer.Exit({"agrees": 0, "disagrees": 1}.get(report["status"], 2))


def main() -> None:
    """Entry point of the ``tess-ad`` script."""
    app()
