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
through finite differences otherwise. The reference comes with an error
estimate per entry (:meth:`~tess_ad._proxy.FiniteDifferenceTesseract.jacobian_with_error`:
truncation measured from two steps, plus rounding from the outputs' magnitude
and dtype), and every way must agree with it entry by entry within
:data:`K` times that estimate plus the way's own rounding (and ``--rtol``
times the block's largest entry, when given). So a correct float32
Tesseract, whose finite differences are noisy, is not reported wrong; a
reference too noisy to tell a right way from a 10% wrong one says
"inconclusive" with the fix, rather than "disagrees". A hand-written gradient
that is wrong shows up as its endpoint disagreeing with ``finite
differences``, with the entry where it is worst: the exit status is 1. A
target that cannot be loaded, or inputs that do not fit its schema, give a
one-line error and exit status 2 (``--debug`` shows the traceback).

The framework adapters are imported only when this command runs, so
``import tess_ad`` stays free of jax and torch.
"""

from __future__ import annotations

import importlib.util
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
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._client import ENDPOINTS, ClientWrapper, endpoint_label
from ._endpoints import Endpoints
from ._fd import METHODS
from ._fd_two_step import ROUNDING_ULPS
from ._paths import get_at_path
from ._proxy import with_finite_differences
from ._runtime import require_runtime
from ._schema import as_numpy, tesseract_schema

app = typer.Typer(
    help="Differentiate Tesseracts from JAX and PyTorch, and check their gradients.",
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# An entry agrees when |way - reference| <= K * (the reference's estimated error
# + the way's own rounding). The estimate already bounds the true error (with a
# safety factor on its truncation part, see _fd_two_step); K leaves room for the
# way's own error, which is of the same kind (an FD proxy behind the adapters).
K = 2.0
# A pair is "inconclusive" when, at an entry that matters (at least SIGNIFICANT
# times the block's largest), K times the reference's estimated error exceeds
# this fraction of the entry: the reference cannot tell right from 10% wrong.
INCONCLUSIVE = 0.1
SIGNIFICANT = 1e-3


class CheckError(Exception):
    """A one-line, user-facing error (bad target, bad inputs)."""


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


def _input_candidates(folder: Path) -> list[Path]:
    """Where a Tesseract keeps example inputs, in the order they are tried."""
    found = [folder / "example_inputs.json"]
    for sub in ("test_cases_inputs", "test_cases"):
        found.extend(sorted((folder / sub).glob("*.json")))
    found.extend(sorted(folder.glob("*inputs*.json")))
    return [p for p in dict.fromkeys(found) if p.is_file()]


def _unwrap(data: Any) -> Any:
    """The inputs of a JSON document.

    Bare, ``{"inputs": ...}`` (also with an endpoint's other arguments beside
    it) or ``{"payload": {"inputs": ...}}``.
    """
    if isinstance(data, dict) and isinstance(data.get("payload"), dict):
        data = data["payload"]
    if isinstance(data, dict) and isinstance(data.get("inputs"), dict):
        return data["inputs"]
    return data


def load_inputs(inputs_file: Path | None, folder: Path | None) -> tuple[dict, Path]:
    """The inputs, and the file they came from.

    ``--inputs FILE`` first; otherwise ``example_inputs.json`` beside the
    Tesseract, then ``test_cases_inputs/*.json``, ``test_cases/*.json`` and
    ``*inputs*.json``, the first that holds a JSON object of inputs.
    """
    if inputs_file is not None:
        files = [Path(inputs_file)]
    elif folder is not None:
        files = _input_candidates(folder)
    else:
        files = []
    if not files:
        raise CheckError(
            "no inputs: pass --inputs FILE (a JSON file with the inputs, or {'inputs': ...})"
        )
    problems = []
    for path in files:
        try:
            data = _unwrap(json.loads(path.read_text()))
        except FileNotFoundError:
            raise CheckError(f"--inputs: no such file {path}") from None
        except json.JSONDecodeError as exc:
            problems.append(f"{path} is not valid JSON ({exc})")
            continue
        if isinstance(data, dict):
            return data, path
        problems.append(f"{path} does not hold a JSON object of inputs")
    raise CheckError(f"--inputs: {'; '.join(problems)}")


def with_defaults(inputs: dict, openapi: dict) -> dict:
    """The inputs with every field the schema gives a default filled in (nested too).

    A ``Differentiable`` input left at its default is still an input whose
    derivatives the Tesseract computes: it is checked like the others.
    """
    schemas = openapi.get("components", {}).get("schemas", {})

    def resolve(node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 32:
            node = schemas.get(node["$ref"].rsplit("/", 1)[-1], {})
            seen += 1
        return node

    def fill(value: Any, node: Any, depth: int = 0) -> Any:
        node = resolve(node)
        props = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(value, dict) or not props or depth > 32:
            return value
        if props.get("object_type", {}).get("const") == "array":
            return value  # an encoded array, not a model
        out = dict(value)
        for name, prop in props.items():
            if name in out:
                out[name] = fill(out[name], prop, depth + 1)
            elif isinstance(prop, dict) and "default" in prop:
                out[name] = prop["default"]
        return out

    payload = resolve(schemas.get("ApplyInputSchema", {}))
    inputs_node = payload.get("properties", {}).get("inputs", {})
    return fill(inputs, inputs_node)


def _first_line(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line.

    An in-process Tesseract wraps its endpoint's exception in a
    ``RuntimeError`` whose text is the traceback followed by "Error running
    Tesseract API <endpoint>: ..."; the endpoint's own exception (the last
    line of that traceback) is what is reported, with where it was raised.
    """
    text = str(exc).strip().splitlines()
    lines = [
        line
        for line in text
        if line.strip() and not line.startswith(("Traceback", "  "))
    ]
    for i, line in enumerate(lines):
        if line.startswith("Error running Tesseract API ") and i > 0:
            endpoint = line[len("Error running Tesseract API ") :].split(":", 1)[0]
            kind, _, message = lines[i - 1].partition(":")
            return f"{kind}: {message.strip() or '(no message)'} (in the Tesseract's {endpoint})"
    return f"{type(exc).__name__}: {lines[-1] if lines else '(no message)'}"


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
    diffs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


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


def _compare(
    ref: np.ndarray, got: np.ndarray, error: np.ndarray, rtol: float | None
) -> dict[str, Any]:
    """One way's block against the reference's: the verdict and the worst entry.

    Returns ``max_abs_diff``, ``max_rel_diff`` (relative to the block's
    largest entry, in the reference or the way), ``verdict`` (``"agrees"``, ``"disagrees"``,
    ``"inconclusive"``), ``ok`` (not ``"disagrees"``) and ``worst``: the
    entry that exceeds its allowance the most (``index`` into the block,
    ``expected``, ``actual``, ``allowed``).
    """
    got_raw = np.asarray(got)
    ref, got = np.asarray(ref, np.float64), got_raw.astype(np.float64)
    if ref.shape != got.shape:
        return {
            "max_abs_diff": float("inf"),
            "max_rel_diff": float("inf"),
            "verdict": "disagrees",
            "ok": False,
            "worst": {"shape": list(got.shape), "expected_shape": list(ref.shape)},
        }
    diff = np.abs(got - ref)
    # the block's size: the reference's or the way's largest entry (a reference
    # swamped by noise can be exactly zero where the way is not)
    scale = float(max(np.max(np.abs(ref)), np.max(np.abs(got)))) if ref.size else 0.0
    kind = got_raw.dtype if got_raw.dtype.kind in "fc" else np.dtype(np.float64)
    rounding = ROUNDING_ULPS * float(np.finfo(kind).eps) * np.abs(got)
    allowed = K * (np.asarray(error, np.float64) + rounding)
    if rtol is not None:
        allowed = allowed + rtol * scale
    max_diff = float(np.max(diff)) if diff.size else 0.0
    rel = max_diff / scale if scale > 0 else (0.0 if max_diff == 0 else float("inf"))
    worst: dict[str, Any] = {}
    if diff.size:
        i = np.unravel_index(int(np.argmax(diff - allowed)), diff.shape)
        worst = {
            "index": [int(j) for j in i],
            "expected": float(ref[i]),
            "actual": float(got[i]),
            "allowed": float(allowed[i]),
        }
    if np.any(diff > allowed):
        verdict = "disagrees"
    elif _too_noisy(ref, got, np.asarray(error, np.float64), scale):
        verdict = "inconclusive"
    else:
        verdict = "agrees"
    return {
        "max_abs_diff": max_diff,
        "max_rel_diff": rel,
        "verdict": verdict,
        "ok": verdict != "disagrees",
        "worst": worst,
    }


def _too_noisy(
    ref: np.ndarray, got: np.ndarray, error: np.ndarray, scale: float
) -> bool:
    """Whether the reference cannot tell a right entry from a 10% wrong one.

    Asked of the entries that matter in the block (at least
    :data:`SIGNIFICANT` times its largest, in the reference or the way):
    entries far below the block's size, or zero in both, are not evidence
    either way.
    """
    size = np.maximum(np.abs(ref), np.abs(got))
    matters = size >= SIGNIFICANT * scale if scale > 0 else np.zeros(size.shape, bool)
    return bool(np.any(matters & (K * error > INCONCLUSIVE * size)))


def _element(path: str, index: Sequence[int]) -> str:
    return f"{path}[{', '.join(map(str, index))}]" if index else path


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
    unknown = sorted(set(frameworks) - {"jax", "torch"})
    if unknown:
        raise CheckError(
            f"--frameworks: unknown {', '.join(map(repr, unknown))}; use jax and/or torch"
        )
    if method == "stochastic":
        raise CheckError(
            "--method stochastic cannot be the reference: SPSA estimates are "
            "random (a few samples), so a correct endpoint would disagree with "
            "them by chance. Use --method central (the default) or richardson."
        )
    client, folder = load_target(target)
    inputs, used = load_inputs(inputs_file, folder)
    inputs = with_defaults(inputs, client.openapi_schema)
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

    shapes = {o: out_flat[o].shape or () for o in out_paths}
    n = sum(int(np.prod(flat[p].shape or ())) for p in in_paths)
    if progress is None:
        progress = sys.stderr.isatty() and 2 * n > 40
    own = Endpoints(client)
    has_own = own.has_reverse or own.has_forward
    estimate: dict[str, dict[str, np.ndarray]] = {}
    skipped: list[dict[str, str]] = []

    def reference_fd(c: Any) -> dict:
        jac, err = with_finite_differences(
            c, method=method, progress=progress
        ).jacobian_with_error(inputs, in_paths, out_paths)
        estimate.update(err)
        return jac

    ways = [
        _run_way(
            "finite differences",
            client,
            reference_fd,
            f"{method} differences of apply, with error estimates",
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
        if importlib.util.find_spec(name) is not None:
            # imported before the clock starts: the check times the calls, not
            # the framework's import
            importlib.import_module(f"tess_ad.{name}")
        else:
            skipped.append(
                {
                    "way": name,
                    "reason": f"{name} is not installed (pip install 'tess-ad[{name}]')",
                }
            )
            continue

        def compute(c: Any, fn: Callable = fn) -> dict:
            target_client = c if has_own else with_finite_differences(c, method=method)
            return fn(target_client, inputs, flat, in_paths, out_paths)

        ways.append(
            _run_way(name, client, compute, f"{how} through tess_ad.{name} ({via})")
        )

    reference = ways[0]
    failures: list[str] = []
    where: list[str] = []
    errors = [{"way": w.name, "error": w.error} for w in ways if w.error is not None]
    for way in ways:
        if way.error is not None:
            continue
        assert way.jacobian is not None  # _run_way sets it whenever error is None
        if reference.jacobian is None or way is reference:
            continue
        for o in out_paths:
            for p in in_paths:
                pair = way.diffs[(o, p)] = _compare(
                    reference.jacobian[o][p], way.jacobian[o][p], estimate[o][p], rtol
                )
                if pair["verdict"] == "disagrees":
                    failures.append(
                        f"{way.name} disagrees with {reference.name} on d {o} / d {p}"
                    )
                    worst = pair["worst"]
                    if "index" in worst:
                        n_out = len(shapes[o])
                        where.append(
                            f"{way.name}: d {_element(o, worst['index'][:n_out])} / "
                            f"d {_element(p, worst['index'][n_out:])} is "
                            f"{worst['actual']:.6g}, finite differences give "
                            f"{worst['expected']:.6g} (allowed difference "
                            f"{worst['allowed']:.2g})"
                        )
    status = "error" if errors else ("disagrees" if failures else "agrees")
    return {
        "target": target,
        "status": status,
        "errors": errors,
        "skipped": skipped,
        "inputs_file": str(used),
        "method": method,
        "rtol": rtol,
        "k": K,
        "where": where,
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
                    {"output": o, "input": p, **d} for (o, p), d in w.diffs.items()
                ],
            }
            for w in ways
        ],
        "ok": status == "agrees",
        "failures": failures,
    }


def _way_verdict(report: dict, way: dict) -> str:
    """One way's verdict over every output/input pair, for the summary."""
    if way["error"] is not None:
        return "[red]error (below)[/red]"
    if way["name"] == report["reference"]:
        return "reference"
    pairs = way["pairs"]
    if not pairs:
        return "not compared"
    bad = [
        f"d {p['output']}/d {p['input']}" for p in pairs if p["verdict"] == "disagrees"
    ]
    if bad:
        more = f" +{len(bad) - 1}" if len(bad) > 1 else ""
        return f"[bold red]DISAGREES[/bold red] {bad[0]}{more}"
    if any(p["verdict"] == "inconclusive" for p in pairs):
        return "[yellow]inconclusive[/yellow]"
    return "[green]agrees[/green]"


def print_report(report: dict, console: Console, verbose: bool = False) -> None:
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
            w["name"], w["calls"], f"{w['seconds']:.2f}", _way_verdict(report, w)
        )
    console.print(summary)
    if verbose:
        _print_pairs(report, console)
    _print_verdict(report, console)


def _print_pairs(report: dict, console: Console) -> None:
    """One table per output/input pair: every way's difference from the reference."""
    ways = {w["name"]: w for w in report["ways"]}
    for w in report["ways"]:
        console.print(f"{w['name']}: {w['via']}", highlight=False)
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
                    table.add_row(name, "-", "-", *cost, "[red]error (below)[/red]")
                    continue
                if name == report["reference"]:
                    table.add_row(name, "-", "-", *cost, "reference")
                    continue
                pair = next(
                    (x for x in w["pairs"] if x["output"] == o and x["input"] == p),
                    None,
                )
                if pair is None:  # the reference failed: nothing to compare with
                    table.add_row(name, "-", "-", *cost, "not compared")
                    continue
                verdict = {
                    "agrees": "[green]agrees[/green]",
                    "inconclusive": "[yellow]inconclusive[/yellow]",
                    "disagrees": "[bold red]DISAGREES[/bold red]",
                }[pair["verdict"]]
                table.add_row(
                    name,
                    f"{pair['max_abs_diff']:.2e}",
                    f"{pair['max_rel_diff']:.2e}",
                    *cost,
                    verdict,
                )
            console.print(table)


def _print_verdict(report: dict, console: Console) -> None:
    """Notes (skipped ways, inconclusive pairs, errors) and the verdict."""
    within = f"{report['k']:g} x the reference's estimated error" + (
        f" + rtol={report['rtol']:g}" if report["rtol"] is not None else ""
    )
    inconclusive = sorted(
        {
            f"d {p['output']} / d {p['input']}"
            for w in report["ways"]
            for p in w["pairs"]
            if p["verdict"] == "inconclusive"
        }
    )
    if inconclusive:
        console.print(
            f"[yellow]inconclusive[/yellow] on {', '.join(inconclusive)}: the "
            "finite-difference reference is too noisy there to tell a right "
            "gradient from a 10% wrong one. Try --method richardson, other "
            "inputs, or a float64 build of the Tesseract."
        )
    for skip in report["skipped"]:
        console.print(f"skipped {skip['way']}: {skip['reason']}", highlight=False)
    for err in report["errors"]:
        hint = (
            " (a served Tesseract: run its server with TESSERACT_DEBUG=1 to get "
            "its traceback in the response)"
            if "500" in err["error"] or "Internal Server Error" in err["error"]
            else ""
        )
        console.print(
            f"[bold red]error[/bold red] in {err['way']}: {escape(err['error'])}{hint}",
            highlight=False,
        )
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
        print_report(report, console, verbose)
    raise typer.Exit({"agrees": 0, "disagrees": 1}.get(report["status"], 2))


def main() -> None:
    """Entry point of the ``tess-ad`` script."""
    app()
