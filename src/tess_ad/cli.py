"""The ``tess-ad`` command: check a Tesseract's derivatives every way, side by side.

``tess-ad check TARGET`` loads a Tesseract (a ``tesseract_api.py``, a folder
holding one, or the URL of a served Tesseract), evaluates it at the example
inputs, and computes the Jacobian of every differentiable output with respect
to every differentiable input:

1. ``finite differences``: :func:`tess_ad.with_finite_differences` on its
   ``apply``, the reference (it trusts nothing but ``apply``);
2. each of the Tesseract's own gradient endpoints that it has, on its own:
   ``jacobian endpoint``, ``VJP endpoint`` (one VJP per output element) and
   ``JVP endpoint`` (one JVP per input element), so that a wrong one cannot
   hide behind a right one;
3. ``jax``: ``jax.vjp`` through :func:`tess_ad.jax.apply_tesseract`, pulled
   back along every output element;
4. ``torch``: backward passes through :func:`tess_ad.torch.apply_tesseract`.

The adapters go through the Tesseract's own endpoints when it has any, and
through finite differences otherwise. Every way must agree with the
reference within ``--rtol`` (relative to the largest entry of each Jacobian
block). A hand-written gradient that is wrong shows up as its endpoint
disagreeing with ``finite differences``: the exit status is 1. A target that
cannot be loaded, or inputs that do not fit its schema, give a one-line error
and exit status 2 (``--debug`` shows the traceback).

The framework adapters are imported only when this command runs, so
``import tess_ad`` stays free of jax and torch.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._client import ENDPOINTS, ClientWrapper, endpoint_label
from ._endpoints import Endpoints
from ._fd import ACCURACY, METHODS
from ._paths import get_at_path
from ._proxy import with_finite_differences
from ._runtime import require_runtime
from ._schema import as_numpy, tesseract_schema

app = typer.Typer(
    help="Differentiate Tesseracts from JAX and PyTorch, and check their gradients.",
    add_completion=False,
    no_args_is_help=True,
)

# Tolerances relative to each Jacobian block's largest entry. Finite differences in
# float64 are this good; in a less precise dtype the error grows with eps^(2/3)
# (central) or eps^(1/2) (forward), see default_rtol.
DEFAULT_RTOL = {"central": 1e-5, "forward": 1e-3, "stochastic": 0.5, "richardson": 1e-5}


def default_rtol(method: str, dtypes: Sequence[Any]) -> float:
    """The default ``--rtol``: by method, widened for the least precise dtype involved."""
    floats = [np.dtype(d) for d in dtypes if d is not None and np.dtype(d).kind == "f"]
    eps = max(
        (float(np.finfo(d).eps) for d in floats),
        default=float(np.finfo(np.float64).eps),
    )
    return max(DEFAULT_RTOL[method], 100.0 * eps ** ACCURACY[method])


class CheckError(Exception):
    """A one-line, user-facing error (bad target, bad inputs)."""


@app.callback()
def _main() -> None:
    """Differentiate Tesseracts from JAX and PyTorch, and check their gradients."""


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def load_target(target: str) -> tuple[Any, Path | None]:
    """A Tesseract client for TARGET, and the folder holding its files (None for a URL)."""
    from tesseract_core import Tesseract

    if _is_url(target):
        client = Tesseract.from_url(target)
        try:
            client.openapi_schema  # noqa: B018 - fail now, with a clear message
        except Exception as exc:
            raise CheckError(
                f"cannot reach a Tesseract at {target}: {_first_line(exc)}"
            ) from exc
        return client, None
    path = Path(target)
    if path.is_dir():
        path = path / "tesseract_api.py"
    if not path.is_file():
        raise CheckError(
            f"{target}: no such tesseract_api.py (give a tesseract_api.py, a folder holding one, or an http:// URL)"
        )
    try:
        require_runtime(f"loading {path} in-process")
    except ImportError as exc:
        raise CheckError(str(exc)) from exc
    try:
        return Tesseract.from_tesseract_api(str(path)), path.parent
    except Exception as exc:
        cause = (
            exc.__cause__.__cause__
            if exc.__cause__ and exc.__cause__.__cause__
            else exc.__cause__ or exc
        )
        raise CheckError(f"cannot load {path}: {_first_line(cause)}") from exc


def load_inputs(inputs_file: Path | None, folder: Path | None) -> dict:
    """The inputs from ``--inputs``, or the example inputs beside the Tesseract."""
    if inputs_file is None:
        candidates = []
        if folder is not None:
            preferred = folder / "example_inputs.json"
            candidates = (
                [preferred]
                if preferred.exists()
                else sorted(folder.glob("*inputs*.json"))
            )
        if not candidates:
            raise CheckError(
                "no inputs: pass --inputs FILE (a JSON file with the inputs, or {'inputs': ...})"
            )
        inputs_file = candidates[0]
    try:
        data = json.loads(Path(inputs_file).read_text())
    except FileNotFoundError:
        raise CheckError(f"--inputs: no such file {inputs_file}") from None
    except json.JSONDecodeError as exc:
        raise CheckError(f"--inputs: {inputs_file} is not valid JSON ({exc})") from None
    if isinstance(data, dict) and set(data) == {"inputs"}:
        data = data["inputs"]
    if not isinstance(data, dict):
        raise CheckError(f"--inputs: {inputs_file} must hold a JSON object of inputs")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    lines = [
        line
        for line in text
        if line.strip() and not line.startswith(("Traceback", "  "))
    ]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()


# --------------------------------------------------------------------------
# The four ways
# --------------------------------------------------------------------------


class CountingClient(ClientWrapper):
    """A pass-through view of a client that counts endpoint calls."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = super().__getattr__(name)
        if name not in ENDPOINTS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def describe(self) -> str:
        """The counts as text: ``"8 apply, 1 VJP"``."""
        return (
            ", ".join(
                f"{n} {endpoint_label(k, short=True)}"
                for k, n in sorted(self.calls.items())
            )
            or "none"
        )


@dataclass
class Way:
    """One way of computing the Jacobian, and how it went."""

    name: str
    jacobian: dict[str, dict[str, np.ndarray]] | None = None
    calls: str = ""
    seconds: float = 0.0
    error: str | None = None
    note: str = ""
    diffs: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


def _run_way(
    name: str, client: Any, compute: Callable[[Any], dict], note: str = ""
) -> Way:
    counting = CountingClient(client)
    t0 = time.perf_counter()
    try:
        jac = compute(counting)
    except Exception as exc:
        return Way(
            name,
            None,
            counting.describe(),
            time.perf_counter() - t0,
            _first_line(exc),
            note,
        )
    return Way(name, jac, counting.describe(), time.perf_counter() - t0, None, note)


def _jax_jacobian(
    client: Any, inputs: dict, flat: Any, in_paths: list[str], out_paths: list[str]
) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from .jax import apply_tesseract

    x = {
        p: jnp.asarray(as_numpy(flat[p].value, flat[p].compute_dtype)) for p in in_paths
    }

    def f(diff: dict) -> dict:
        out = apply_tesseract(client, flat.unflatten(diff))
        return {o: get_at_path(out, o) for o in out_paths}

    y, pullback = jax.vjp(f, x)

    def row(o: str, idx: tuple[int, ...]) -> dict:
        ct = {q: np.zeros(y[q].shape, y[q].dtype) for q in out_paths}
        ct[o][idx] = 1.0
        return pullback(ct)[0]

    return _rows(
        {o: tuple(y[o].shape) for o in out_paths},
        {p: tuple(x[p].shape) for p in in_paths},
        row,
    )


def _torch_jacobian(
    client: Any, inputs: dict, flat: Any, in_paths: list[str], out_paths: list[str]
) -> dict:
    import torch

    from .torch import apply_tesseract

    x = {
        p: torch.tensor(
            as_numpy(flat[p].value, flat[p].compute_dtype), requires_grad=True
        )
        for p in in_paths
    }
    out = apply_tesseract(client, flat.unflatten(x))
    y = {o: cast("torch.Tensor", get_at_path(out, o)) for o in out_paths}

    def row(o: str, idx: tuple[int, ...]) -> dict:
        grads = torch.autograd.grad(
            y[o][idx], [x[p] for p in in_paths], retain_graph=True, allow_unused=True
        )
        return {
            p: g.detach() for p, g in zip(in_paths, grads, strict=True) if g is not None
        }

    return _rows(
        {o: tuple(y[o].shape) for o in out_paths},
        {p: tuple(x[p].shape) for p in in_paths},
        row,
    )


def _rows(
    out_shapes: dict[str, tuple[int, ...]],
    in_shapes: dict[str, tuple[int, ...]],
    row: Callable[[str, tuple[int, ...]], dict],
) -> dict[str, dict[str, np.ndarray]]:
    """Jacobian blocks from one reverse pass per output element.

    ``row(o, idx)`` gives ``{in_path: gradient}`` of output element ``o[idx]``;
    inputs it leaves out have a zero gradient.
    """
    result: dict[str, dict[str, np.ndarray]] = {}
    for o, shape in out_shapes.items():
        blocks = {p: np.zeros((*shape, *s)) for p, s in in_shapes.items()}
        for idx in np.ndindex(shape):
            for p, g in row(o, idx).items():
                blocks[p][idx] = np.asarray(g)
        result[o] = blocks
    return result


# --------------------------------------------------------------------------
# Comparison and report
# --------------------------------------------------------------------------


def _compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return float("inf"), float("inf")
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    return diff, rel


def run_check(
    target: str,
    inputs_file: Path | None = None,
    method: str = "central",
    inputs_paths: Sequence[str] | None = None,
    outputs_paths: Sequence[str] | None = None,
    rtol: float | None = None,
    frameworks: Sequence[str] = ("jax", "torch"),
    progress: bool | None = None,
) -> dict:
    """Compute and compare the derivatives; return the report as a dict.

    ``progress`` shows a bar of the finite-difference evaluations on stderr;
    ``None`` shows it for sweeps of more than 40 evaluations on a terminal.

    Raises:
        CheckError: One-line errors for a bad target, inputs or paths.
    """
    if method not in METHODS:
        raise CheckError(
            f"--method must be one of {', '.join(METHODS)}, got {method!r}"
        )
    client, folder = load_target(target)
    inputs = load_inputs(inputs_file, folder)
    schema = tesseract_schema(client)
    try:
        flat = schema.inputs.flatten(inputs)
    except ValueError as exc:
        raise CheckError(f"inputs do not match the schema: {exc}") from exc
    in_paths = list(inputs_paths or flat.differentiable_paths)
    try:
        flat.check_paths(in_paths, "--inputs-paths")
    except ValueError as exc:
        raise CheckError(str(exc)) from exc
    for p in in_paths:
        if not flat[p].differentiable:
            raise CheckError(f"--inputs-paths: {p!r} is not a Differentiable input")
    try:
        outputs = client.apply(inputs=inputs)
    except Exception as exc:
        raise CheckError(f"apply failed at these inputs: {_first_line(exc)}") from exc
    out_flat = schema.outputs.flatten(outputs, check=False)
    out_paths = list(outputs_paths or out_flat.differentiable_paths)
    for o in out_paths:
        if o not in out_flat or not out_flat[o].differentiable:
            raise CheckError(f"--outputs-paths: {o!r} is not a Differentiable output")
    if not in_paths or not out_paths:
        raise CheckError(
            "nothing to differentiate: the Tesseract has no differentiable inputs or outputs here"
        )

    if rtol is None:
        rtol = default_rtol(
            method,
            [flat[p].compute_dtype for p in in_paths]
            + [out_flat[o].compute_dtype for o in out_paths],
        )
    shapes = {o: out_flat[o].shape or () for o in out_paths}
    n = sum(int(np.prod(flat[p].shape or ())) for p in in_paths)
    if progress is None:
        progress = sys.stderr.isatty() and 2 * n > 40
    own = Endpoints(client)
    has_own = own.has_reverse or own.has_forward
    ways = [
        _run_way(
            "finite differences",
            client,
            lambda c: with_finite_differences(
                c, method=method, progress=progress
            ).jacobian(inputs=inputs, jac_inputs=in_paths, jac_outputs=out_paths),
            f"{method} differences of apply",
        )
    ]
    for route, name, present, how in (
        ("jacobian", "jacobian endpoint", own.has_jacobian, "the jacobian endpoint"),
        ("vjp", "VJP endpoint", own.has_vjp, "one VJP per output element"),
        ("jvp", "JVP endpoint", own.has_jvp, "one JVP per input element"),
    ):
        if present:

            def by_route(c: Any, route: str = route) -> dict:
                return Endpoints(c).jacobian(
                    inputs, in_paths, out_paths, output_shapes=shapes, route=route
                )

            ways.append(_run_way(name, client, by_route, how))
    # the adapters differentiate through the Tesseract's own endpoints, or FD when it has none
    via = "own endpoints" if has_own else f"{method} differences"
    for name, fn, how in (
        ("jax", _jax_jacobian, "jax.vjp"),
        ("torch", _torch_jacobian, "backward()"),
    ):
        if name not in frameworks:
            continue

        def compute(c: Any, fn: Callable = fn) -> dict:
            target_client = c if has_own else with_finite_differences(c, method=method)
            return fn(target_client, inputs, flat, in_paths, out_paths)

        ways.append(
            _run_way(name, client, compute, f"{how} through tess_ad.{name} ({via})")
        )

    reference = ways[0]
    failures = []
    for way in ways:
        if way.error is not None:
            failures.append(f"{way.name}: {way.error}")
            continue
        assert way.jacobian is not None  # _run_way sets it whenever error is None
        if reference.jacobian is None or way is reference:
            continue
        for o in out_paths:
            for p in in_paths:
                way.diffs[(o, p)] = _compare(
                    reference.jacobian[o][p], way.jacobian[o][p]
                )
                if not way.diffs[(o, p)][1] <= rtol:
                    failures.append(
                        f"{way.name} disagrees with {reference.name} on d {o} / d {p}"
                    )
    return {
        "target": target,
        "method": method,
        "rtol": rtol,
        "reference": reference.name,
        "inputs_paths": in_paths,
        "outputs_paths": out_paths,
        "ways": [
            {
                "name": w.name,
                "via": w.note,
                "calls": w.calls,
                "seconds": w.seconds,
                "error": w.error,
                "pairs": [
                    {
                        "output": o,
                        "input": p,
                        "max_abs_diff": d[0],
                        "max_rel_diff": d[1],
                        "ok": d[1] <= rtol,
                    }
                    for (o, p), d in w.diffs.items()
                ],
            }
            for w in ways
        ],
        "ok": not failures,
        "failures": failures,
    }


def print_report(report: dict, console: Console) -> None:
    """Rich tables: one summary of the ways, one per output/input pair."""
    summary = Table(title=f"tess-ad check {report['target']}", title_justify="left")
    for col in ("way", "how", "endpoint calls", "seconds"):
        summary.add_column(col)
    for w in report["ways"]:
        summary.add_row(w["name"], w["via"], w["calls"], f"{w['seconds']:.3f}")
    console.print(summary)
    ways = {w["name"]: w for w in report["ways"]}
    for o in report["outputs_paths"]:
        for p in report["inputs_paths"]:
            table = Table(title=f"d {o} / d {p}", title_justify="left")
            for col in (
                "way",
                "max abs diff",
                "max rel diff",
                "calls",
                "seconds",
                "verdict",
            ):
                table.add_column(col)
            for name, w in ways.items():
                cost = (w["calls"], f"{w['seconds']:.3f}")
                if w["error"] is not None:
                    table.add_row(
                        name, "-", "-", *cost, f"[red]error: {w['error']}[/red]"
                    )
                    continue
                if name == report["reference"]:
                    table.add_row(name, "-", "-", *cost, "reference")
                    continue
                pair = next(
                    x for x in w["pairs"] if x["output"] == o and x["input"] == p
                )
                verdict = (
                    "[green]agrees[/green]"
                    if pair["ok"]
                    else "[bold red]DISAGREES[/bold red]"
                )
                table.add_row(
                    name,
                    f"{pair['max_abs_diff']:.2e}",
                    f"{pair['max_rel_diff']:.2e}",
                    *cost,
                    verdict,
                )
            console.print(table)
    if report["ok"]:
        console.print(
            f"[bold green]OK[/bold green]: every way agrees within rtol={report['rtol']:g}"
        )
    else:
        console.print(f"[bold red]FAILED[/bold red] (rtol={report['rtol']:g}):")
        for f in report["failures"]:
            console.print(f"  - {f}")


@app.command()
def check(
    target: Annotated[
        str, typer.Argument(help="tesseract_api.py, a folder holding one, or a URL.")
    ],
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs",
            help="JSON inputs (default: *inputs*.json beside the Tesseract).",
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="Finite-difference method: central, forward, richardson or stochastic."
        ),
    ] = "central",
    inputs_paths: Annotated[
        list[str] | None,
        typer.Option(
            "--inputs-paths", help="Differentiate w.r.t. these inputs (default: all)."
        ),
    ] = None,
    outputs_paths: Annotated[
        list[str] | None,
        typer.Option(
            "--outputs-paths", help="Differentiate these outputs (default: all)."
        ),
    ] = None,
    rtol: Annotated[
        float | None,
        typer.Option(
            help="Tolerance relative to each block's largest entry (default by method)."
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
            progress=progress,
        )
    except CheckError as exc:
        if debug:
            traceback.print_exc()
        Console(stderr=True).print(
            f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, console)
    raise typer.Exit(0 if report["ok"] else 1)


def main() -> None:
    """Entry point of the ``tess-ad`` script."""
    app()
