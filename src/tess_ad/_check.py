"""Check a Tesseract's derivatives every way: the engine of ``tess-ad check`` and its Python API.

:func:`check_gradients` computes the Jacobian of every differentiable output
with respect to every differentiable input:

1. ``finite differences``: :func:`tess_ad.with_finite_differences` on its
   ``apply``, the reference (it trusts nothing but ``apply``), with an error
   estimate per entry (central differences at two steps: the truncation
   measured, the rounding from the outputs' magnitude and dtype);
2. each of the Tesseract's own gradient endpoints that it has, on its own:
   ``jacobian endpoint``, ``VJP endpoint`` (one VJP per output element) and
   ``JVP endpoint`` (one JVP per input element), so that a wrong one cannot
   hide behind a right one;
3. ``jax``: ``jax.vjp`` through :func:`tess_ad.jax.apply_tesseract`;
4. ``torch``: backward passes through :func:`tess_ad.torch.apply_tesseract`.

and compares every way with the reference entry by entry: an entry agrees
when the difference is within :data:`K` times the reference's estimated
error plus the way's own rounding. So a correct float32 Tesseract, whose
finite differences are noisy, is not reported wrong; a reference too noisy to
tell a right entry from a 10% wrong one makes the pair "inconclusive". The
result is a :class:`Report`; :func:`assert_gradients` turns a failed one into
an ``AssertionError`` for a test suite. The framework adapters are imported
only when a check runs, so ``import tess_ad`` stays free of jax and torch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np

from ._client import (
    ENDPOINTS,
    ClientWrapper,
    endpoint_label,
    remote_target,
    url_of,
)
from ._endpoints import Endpoints
from ._fd import METHODS
from ._fd_two_step import ROUNDING_ULPS
from ._paths import get_at_path
from ._proxy import with_finite_differences
from ._runtime import require_runtime
from ._schema import as_numpy, tesseract_schema

__all__ = [
    "CheckError",
    "Report",
    "assert_gradients",
    "check_gradients",
    "run_check",
]

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


class CheckError(ValueError):
    """A one-line, user-facing error (bad target, bad inputs).

    ``str()`` is the message followed by the hint, when there is one.

    Attributes:
        message: What happened, and where.
        hint: What to do about it, or ``None``.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message}. {hint}")
        self.message = message
        self.hint = hint


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def load_target(target: str) -> tuple[Any, Path | None]:
    """A Tesseract client for TARGET, and the folder holding its files (None for a URL).

    A URL is probed first (:func:`_probe_url`, bounded in time), so that a
    server that is not there, or not a Tesseract, is one clear error.

    Raises:
        CheckError: The target cannot be loaded or reached; the message says
            why and what to do.
    """
    from tesseract_core import Tesseract

    if _is_url(target):
        client = Tesseract.from_url(target)
        _probe_url(target, url_of(client) or target)
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


# How long ``tess-ad check URL`` waits, in seconds, to connect to the server and
# then for its answer to GET /openapi.json, before saying it cannot reach it.
PROBE_TIMEOUT = (5.0, 10.0)


def _probe_url(target: str, url: str) -> None:
    """Make sure a Tesseract answers at ``url``: one bounded GET of its OpenAPI schema.

    Made with ``requests`` directly rather than through the client, which has
    no timeout by default (a real check's calls may take long) and retries a
    failed connection: this GET is made once, within :data:`PROBE_TIMEOUT`.

    Args:
        target: The URL as the user gave it, for the message.
        url: The client's (sanitised) URL, the one probed.

    Raises:
        CheckError: Naming ``target``, what happened (connection refused,
            timed out, host not found, or the server answered but is not a
            Tesseract) and what to do.
    """
    import requests

    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"cannot reach a Tesseract at {target}"
    serve = (
        "Is it served? Start it with `tesseract serve NAME` or "
        "`TESSERACT_API_PATH=path/to/tesseract_api.py tesseract-runtime serve "
        f"--port {port}`, and check the host and port in the URL."
    )
    connect, read = PROBE_TIMEOUT
    try:
        response = requests.get(f"{url}/openapi.json", timeout=PROBE_TIMEOUT)
    except requests.exceptions.ConnectTimeout as exc:
        raise CheckError(
            f"{where}: timed out (no answer to the connection to {host} port "
            f"{port} within {connect:g} s)",
            serve,
        ) from exc
    except requests.exceptions.ReadTimeout as exc:
        raise CheckError(
            f"{where}: timed out (connected to {host} port {port}, but GET "
            f"/openapi.json got no answer within {read:g} s)",
            "Is the server stuck or busy? Check that this port serves a "
            "Tesseract, and that its GET /health answers.",
        ) from exc
    except requests.RequestException as exc:
        causes = _causes(exc)
        if any(isinstance(c, socket.gaierror) for c in causes):
            raise CheckError(
                f"{where}: host not found ({host!r} does not resolve)",
                "Check the host name in the URL.",
            ) from exc
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            raise CheckError(
                f"{where}: connection refused (nothing is listening on {host} "
                f"port {port})",
                serve,
            ) from exc
        raise CheckError(
            f"{where}: could not connect ({_first_line(causes[-1])})", serve
        ) from exc
    answered = (
        f"{where}: the server on {host} port {port} answered, but is not a Tesseract"
    )
    if not response.ok:
        raise CheckError(
            f"{answered} (GET /openapi.json gave HTTP {response.status_code} "
            f"{response.reason})",
            serve,
        )
    try:
        schema = response.json()
    except ValueError:
        schema = None
    if not isinstance(schema, dict) or "/apply" not in (schema.get("paths") or {}):
        raise CheckError(
            f"{answered} (its /openapi.json has no /apply endpoint)", serve
        )


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: causes, contexts, and urllib3's ``reason``, outermost first."""
    found: list[BaseException] = []
    todo = [exc]
    while todo and len(found) < 32:
        e = todo.pop(0)
        if any(e is f for f in found):
            continue
        found.append(e)
        wrapped = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo += [w for w in wrapped if isinstance(w, BaseException)]
    return found


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


# tesseract-core's HTTP client (``HTTPClient._decode_response``) raises
# ``RuntimeError(f"Error {status} from Tesseract: {body}")`` for an answer that
# is not a success (a 422 validation error aside: that one is a pydantic
# ValidationError). When the Tesseract's own code raises, the answer is a 500
# whose body is "Internal Server Error", or, from a server run with
# TESSERACT_DEBUG=1, the server's traceback ending with the Tesseract's own
# exception.
_HTTP_ERROR = re.compile(r"Error (\d{3}) from Tesseract: ")
# The frame where tesseract-core's runtime calls the Tesseract's endpoint.
_RUNTIME_FRAME = re.compile(
    r'File ".*tesseract_core[/\\]runtime[/\\]core\.py", line \d+, in (\w+)'
)

SERVED_500_HINT = (
    "The served Tesseract raised (HTTP 500) without saying what: run its server "
    "with TESSERACT_DEBUG=1 to get its exception in the response."
)


def _http_error(exc: BaseException) -> tuple[int, str] | None:
    """The status and body of the HTTP error answer ``exc`` reports (or wraps), else ``None``.

    Keyed on what tesseract-core's HTTP client raises (see ``_HTTP_ERROR``):
    a ``RuntimeError`` whose text *starts* with ``Error <status> from
    Tesseract:``; a "500" anywhere else in a message is not a status.
    """
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            break
        if isinstance(seen, RuntimeError):
            text = str(seen)
            found = _HTTP_ERROR.match(text)
            if found:
                return int(found[1]), text[found.end() :]
        seen = seen.__cause__
    return None


def _served_exception(body: str) -> str | None:
    """``Type: message (in the served Tesseract's <endpoint>)`` from a debug server's traceback.

    ``None`` when ``body`` holds no traceback (a server without
    TESSERACT_DEBUG=1). The exception is the line after the traceback's last
    frame; the endpoint is the runtime's frame that called the Tesseract.
    """
    lines = body.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if "Traceback (most recent call last):" not in body or not frames:
        return None
    after = [
        line
        for line in lines[frames[-1] + 1 :]
        if line.strip() and not line.startswith("    ")
    ]
    if not after:
        return None
    kind, _, message = after[0].partition(":")
    endpoints = [m[1] for line in lines if (m := _RUNTIME_FRAME.search(line))]
    where = f"'s {endpoints[-1]}" if endpoints else ""
    return (
        f"{kind}: {message.strip() or '(no message)'} (in the served Tesseract{where})"
    )


def _hint(exc: BaseException) -> str | None:
    """What to do about ``exc``, when there is something to say.

    A served Tesseract's bare HTTP 500 (its code raised, the server does not
    say what): :data:`SERVED_500_HINT`. When the server ran with
    TESSERACT_DEBUG=1, :func:`_first_line` shows the exception itself and no
    hint is needed.
    """
    http = _http_error(exc)
    if http is not None and http[0] == 500 and _served_exception(http[1]) is None:
        return SERVED_500_HINT
    return None


def _first_line(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line.

    An in-process Tesseract wraps its endpoint's exception in a
    ``RuntimeError`` whose text is the traceback followed by "Error running
    Tesseract API <endpoint>: ..."; the endpoint's own exception (the last
    line of that traceback) is what is reported, with where it was raised.
    A served Tesseract's error answer is ``HTTP <status> from the served
    Tesseract: <body>``, or, when the body is a traceback (a server run with
    TESSERACT_DEBUG=1), the Tesseract's own exception and endpoint.
    """
    http = _http_error(exc)
    if http is not None:
        status, body = http
        raised = _served_exception(body) if status == 500 else None
        if raised is not None:
            return raised
        first = next(
            (line.strip() for line in body.splitlines() if line.strip()),
            "(empty answer)",
        )
        return f"HTTP {status} from the served Tesseract: {first}"
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
    counts: dict[str, int] = field(default_factory=dict)
    # per compared block: (way - reference) / allowed, for the HTML report
    ratios: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    hint: str | None = None


def _run_way(
    name: str, client: Any, compute: Callable[[Any], dict], note: str = ""
) -> Way:
    counting = CountingClient(client)
    t0 = time.perf_counter()
    hint = None
    try:
        jac, error = compute(counting), None
    except Exception as exc:
        jac, error, hint = None, _first_line(exc), _hint(exc)
    return Way(
        name,
        jac,
        counting.describe(),
        time.perf_counter() - t0,
        error,
        note,
        counts=dict(sorted(counting.calls.items())),
        hint=hint,
    )


@dataclass
class Probes:
    """Random directions a framework way is checked along, and what it gave.

    ``cotangents[k]`` (``{out_path: array}``) and ``tangents[k]``
    (``{in_path: array}``) have random signs in every entry (so every row and
    column of the Jacobian takes part; see :func:`make_probes`); ``vjps[k]``
    and ``jvps[k]`` are the framework's products along them.
    """

    cotangents: list[dict[str, np.ndarray]]
    tangents: list[dict[str, np.ndarray]]
    vjps: list[dict[str, np.ndarray]] = field(default_factory=list)
    jvps: list[dict[str, np.ndarray]] = field(default_factory=list)


def make_probes(
    count: int,
    seed: int,
    out_shapes: Mapping[str, tuple[int, ...]],
    x: Mapping[str, np.ndarray],
) -> Probes:
    """``count`` seeded cotangents and tangents (see :class:`Probes`).

    Cotangents are +-1; tangent entries are +- the magnitude of their input
    element (zeros: the median magnitude of their leaf, else 1), so a
    directional difference along one moves every element on its own scale.
    """
    rng = np.random.default_rng(seed)

    def signs(shape: tuple[int, ...]) -> np.ndarray:
        return rng.choice(np.array([-1.0, 1.0]), size=shape)

    scales = {}
    for p, value in x.items():
        mag = np.abs(np.asarray(value, np.float64))
        nonzero = mag[mag > 0]
        scales[p] = np.where(
            mag > 0, mag, float(np.median(nonzero)) if nonzero.size else 1.0
        )
    return Probes(
        [{o: signs(s) for o, s in out_shapes.items()} for _ in range(count)],
        [{p: signs(v.shape) * v for p, v in scales.items()} for _ in range(count)],
    )


def _jax_probes(
    client: Any, flat: Any, in_paths: list[str], out_paths: list[str], probes: Probes
) -> Probes:
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
    for ct in probes.cotangents:
        (g,) = pullback({o: jnp.asarray(ct[o], y[o].dtype) for o in out_paths})
        probes.vjps.append({p: np.asarray(g[p]) for p in in_paths})
    for t in probes.tangents:
        tangent = {p: jnp.asarray(t[p], x[p].dtype) for p in in_paths}
        _, jt = jax.jvp(f, (x,), (tangent,))
        probes.jvps.append({o: np.asarray(jt[o]) for o in out_paths})
    return probes


def _torch_probes(
    client: Any, flat: Any, in_paths: list[str], out_paths: list[str], probes: Probes
) -> Probes:
    import torch

    from .torch import apply_tesseract

    def tensors(requires_grad: bool) -> dict[str, torch.Tensor]:
        return {
            p: torch.tensor(
                as_numpy(flat[p].value, flat[p].compute_dtype),
                requires_grad=requires_grad,
            )
            for p in in_paths
        }

    def f(x: dict) -> dict:
        out = apply_tesseract(client, flat.unflatten(x))
        return {o: cast("torch.Tensor", get_at_path(out, o)) for o in out_paths}

    x = tensors(True)
    y = f(x)
    for ct in probes.cotangents:
        grads = torch.autograd.grad(
            [y[o] for o in out_paths],
            [x[p] for p in in_paths],
            grad_outputs=[torch.as_tensor(ct[o], dtype=y[o].dtype) for o in out_paths],
            retain_graph=True,
            allow_unused=True,
        )
        probes.vjps.append(
            {
                p: np.zeros(x[p].shape) if g is None else g.detach().numpy()
                for p, g in zip(in_paths, grads, strict=True)
            }
        )
    base = tensors(False)
    for t in probes.tangents:
        tangent = {p: torch.as_tensor(t[p], dtype=base[p].dtype) for p in in_paths}
        jt = torch.func.jvp(f, (base,), (tangent,))[1]
        probes.jvps.append({o: jt[o].detach().numpy() for o in out_paths})
    return probes


def _contract(
    blocks: Mapping[str, Mapping[str, np.ndarray]],
    vector: Mapping[str, np.ndarray],
    reverse: bool,
) -> dict[str, np.ndarray]:
    """``ct . J`` per input (``reverse``) or ``J . t`` per output, from Jacobian blocks."""
    result: dict[str, np.ndarray] = {}
    for o, row in blocks.items():
        for p, block in row.items():
            block = np.asarray(block, np.float64)
            if reverse:
                term = np.tensordot(vector[o], block, axes=np.ndim(vector[o]))
                result[p] = result.get(p, 0.0) + term
            else:
                n_in = np.ndim(vector[p])
                term = np.tensordot(
                    block,
                    vector[p],
                    axes=(
                        list(range(block.ndim - n_in, block.ndim)),
                        list(range(n_in)),
                    ),
                )
                result[o] = result.get(o, 0.0) + term
    return result


# --------------------------------------------------------------------------
# Comparison and report
# --------------------------------------------------------------------------


def _compare(
    ref: np.ndarray, got: np.ndarray, error: np.ndarray, rtol: float | None
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One way's block against the reference's: the verdict, the worst entry, the ratios.

    Returns the comparison (``max_abs_diff``, ``max_rel_diff`` relative to
    the block's largest entry in the reference or the way, ``verdict``:
    ``"agrees"``, ``"disagrees"`` or ``"inconclusive"``, ``ok`` (not
    ``"disagrees"``) and ``worst``: the entry that exceeds its allowance the
    most, with its ``index`` into the block, ``expected``, ``actual``,
    ``allowed``) and, per entry, ``(way - reference) / allowed`` (beyond
    +-1: the entry disagrees; ``None`` when the shapes differ), which the
    HTML report draws.
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
        }, None
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
    signed = got - ref
    # nothing allowed (an exact zero reference): any difference is infinitely off
    ratio = np.where(signed == 0, 0.0, np.copysign(np.inf, signed))
    np.divide(signed, allowed, out=ratio, where=allowed > 0)
    return {
        "max_abs_diff": max_diff,
        "max_rel_diff": rel,
        "verdict": verdict,
        "ok": verdict != "disagrees",
        "worst": worst,
    }, ratio


def _comparisons(
    got: Any,
    reference: Mapping[str, Mapping[str, np.ndarray]],
    estimate: Mapping[str, Mapping[str, np.ndarray]],
    shapes: Mapping[str, tuple[int, ...]],
    in_paths: Sequence[str],
    out_paths: Sequence[str],
    rtol: float | None,
) -> Iterator[
    tuple[
        tuple[str, str],
        str,
        tuple[dict[str, Any], np.ndarray | None],
        Callable[[list[int]], str],
    ]
]:
    """Every comparison of one way with the reference: ``(key, label, compared, describe)``.

    ``compared`` is what :func:`_compare` returns.

    A way that computed Jacobian blocks is compared block by block; one that
    ran probes (:class:`Probes`), product by product with the reference's
    Jacobian contracted along the same directions (and its error estimate
    along their magnitudes). ``describe(index)`` names an entry.
    """
    if isinstance(got, Probes):
        for k, (ct, vjp) in enumerate(zip(got.cotangents, got.vjps, strict=True)):
            expected = _contract(reference, ct, reverse=True)
            error = _contract(estimate, {o: np.abs(c) for o, c in ct.items()}, True)
            for p in in_paths:
                yield (
                    (f"VJP probe {k + 1}", p),
                    f"VJP probe {k + 1} (d/d {p})",
                    _compare(expected[p], vjp[p], error[p], rtol),
                    functools.partial(_name_vjp, k, p),
                )
        for k, (t, jvp) in enumerate(zip(got.tangents, got.jvps, strict=True)):
            expected = _contract(reference, t, reverse=False)
            error = _contract(estimate, {p: np.abs(v) for p, v in t.items()}, False)
            for o in out_paths:
                yield (
                    (o, f"JVP probe {k + 1}"),
                    f"JVP probe {k + 1} ({o})",
                    _compare(expected[o], jvp[o], error[o], rtol),
                    functools.partial(_name_jvp, k, o),
                )
        return
    for o in out_paths:
        for p in in_paths:
            n_out = len(shapes[o])
            yield (
                (o, p),
                f"d {o} / d {p}",
                _compare(reference[o][p], got[o][p], estimate[o][p], rtol),
                functools.partial(_name_entry, o, p, n_out),
            )


def _name_vjp(k: int, p: str, index: list[int]) -> str:
    return f"VJP probe {k + 1}, d/d {_element(p, index)}"


def _name_jvp(k: int, o: str, index: list[int]) -> str:
    return f"JVP probe {k + 1}, {_element(o, index)}"


def _name_entry(o: str, p: str, n_out: int, index: list[int]) -> str:
    return f"d {_element(o, index[:n_out])} / d {_element(p, index[n_out:])}"


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


ENDPOINT_WAYS = ("jacobian", "vjp", "jvp")


def _check_options(
    method: str, frameworks: Sequence[str], endpoints: Sequence[str]
) -> None:
    unknown_endpoints = sorted(set(endpoints) - set(ENDPOINT_WAYS))
    if unknown_endpoints:
        raise CheckError(
            f"--endpoints: unknown {', '.join(map(repr, unknown_endpoints))}; use "
            f"{', '.join(ENDPOINT_WAYS)}"
        )
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


def run_check(
    target: str,
    inputs_file: Path | None = None,
    method: str = "central",
    inputs_paths: Sequence[str] | None = None,
    outputs_paths: Sequence[str] | None = None,
    rtol: float | None = None,
    frameworks: Sequence[str] = ("jax", "torch"),
    progress: bool | None = None,
    eps: float | None = None,
    endpoints: Sequence[str] = ENDPOINT_WAYS,
    probes: int = 3,
    seed: int = 0,
) -> Report:
    """``tess-ad check TARGET``: load the Tesseract and its inputs, then :func:`check_gradients`.

    ``progress`` shows a bar of the finite-difference evaluations on stderr;
    ``None`` shows it for sweeps of more than 40 evaluations on a terminal.

    Raises:
        CheckError: One-line errors for a bad target, inputs or paths.
    """
    _check_options(method, frameworks, endpoints)
    client, folder = load_target(target)
    inputs, used = load_inputs(inputs_file, folder)
    return check_gradients(
        client,
        inputs,
        method=method,
        input_paths=inputs_paths,
        output_paths=outputs_paths,
        rtol=rtol,
        frameworks=frameworks,
        progress=progress,
        eps=eps,
        endpoints=endpoints,
        probes=probes,
        seed=seed,
        target=target,
        inputs_file=used,
    )


def check_gradients(
    tesseract: Any,
    inputs: Mapping[str, Any],
    *,
    method: str = "central",
    input_paths: Sequence[str] | None = None,
    output_paths: Sequence[str] | None = None,
    rtol: float | None = None,
    frameworks: Sequence[str] = ("jax", "torch"),
    progress: bool | None = False,
    eps: float | None = None,
    endpoints: Sequence[str] = ENDPOINT_WAYS,
    probes: int = 3,
    seed: int = 0,
    target: str | None = None,
    inputs_file: Path | None = None,
) -> Report:
    """Check a Tesseract's derivatives every way against finite differences of its ``apply``.

    The engine of ``tess-ad check``. The reference is
    ``with_finite_differences(tesseract, method=method).jacobian_with_error``
    (an error estimate per entry); each of the Tesseract's own gradient
    endpoints on its own (``jacobian``, VJP rows, JVP columns) and the JAX and
    PyTorch adapters are compared with it entry by entry: an entry agrees
    when ``|way - reference| <= K * (estimated error + the way's rounding)``
    (plus ``rtol`` times the block's largest entry, when given). Inputs the
    schema gives a default and ``inputs`` leaves out are filled in, and
    checked when they are ``Differentiable``.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` (in-process or served).
        inputs: The point, as for ``apply``.
        method: The reference's method: ``"central"`` (default) or
            ``"richardson"`` (both with error estimates) or ``"forward"``;
            ``"stochastic"`` is refused.
        input_paths: Inputs to differentiate (default: every differentiable one).
        output_paths: Outputs to differentiate (default: every differentiable one).
        rtol: An extra tolerance relative to each block's largest entry.
        frameworks: Which adapters to check (``"jax"``, ``"torch"``); one
            not installed is skipped with a note.
        progress: A progress bar of the finite-difference sweep on stderr
            (``None``: on a terminal, for long sweeps).
        eps: An absolute step for the reference (default: scale-aware).
        endpoints: Which of the Tesseract's own endpoints to check, of
            ``"jacobian"``, ``"vjp"``, ``"jvp"`` (default: all it has).
        probes: How many random cotangents and tangents each framework way
            is checked along (a VJP and a JVP each, not a pull-back per
            output element). On a Tesseract with no gradient endpoint the
            adapters go through finite differences, which reuse the
            reference's evaluations: a framework row then costs a few
            applies per probe, whatever the number of inputs.
        seed: The probes' seed.
        target: What to call the Tesseract in the report.
        inputs_file: Where the inputs came from, for the report.

    Returns:
        The :class:`Report` (``report.ok``, ``report.status``,
        ``report.failures``, ``report.where``, ``report.to_json()``).

    Raises:
        CheckError: For bad options, inputs that do not fit the schema, paths
            that are not differentiable, or an ``apply`` that fails at the
            inputs themselves (a ``ValueError``).

    Example:
        >>> import tess_ad
        >>> from tesseract_core import Tesseract
        >>> t = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
        >>> report = tess_ad.check_gradients(
        ...     t, {"x": [0.5, -1.0, 2.0], "a": 1.0, "b": 100.0}, frameworks=()
        ... )
        >>> report.ok, report.status
        (True, 'agrees')
        >>> [w["name"] for w in report["ways"]]
        ['finite differences', 'jacobian endpoint', 'VJP endpoint', 'JVP endpoint']
    """
    _check_options(method, frameworks, endpoints)
    client = tesseract
    inputs_paths, outputs_paths = input_paths, output_paths
    inputs = with_defaults(dict(inputs), client.openapi_schema)
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
        raise CheckError(
            f"apply failed at these inputs: {_first_line(exc)}", _hint(exc)
        ) from exc
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

    # Without gradient endpoints, the adapters differentiate through finite
    # differences of apply, at the points the reference already evaluated
    # (the same steps): an evaluation cache they share makes each framework
    # row cost only its new points (along the tangents), and the rows still
    # check the adapters' own work, the contraction with each probe.
    with contextlib.ExitStack() as stack:
        shared = (
            None
            if has_own
            else stack.enter_context(
                tempfile.TemporaryDirectory(prefix="tess_ad-check-")
            )
        )

        def reference_fd(c: Any) -> dict:
            jac, err = with_finite_differences(
                c, method=method, eps=eps, progress=progress, cache=shared
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
            (
                "jacobian",
                "jacobian endpoint",
                own.has_jacobian,
                "the jacobian endpoint",
            ),
            ("vjp", "VJP endpoint", own.has_vjp, "one VJP per output element"),
            ("jvp", "JVP endpoint", own.has_jvp, "one JVP per input element"),
        ):
            if present and route in endpoints:

                def by_route(c: Any, route: str = route) -> dict:
                    return Endpoints(c).jacobian(
                        inputs, in_paths, out_paths, output_shapes=shapes, route=route
                    )

                ways.append(_run_way(name, client, by_route, how))
        # the adapters differentiate through the Tesseract's own endpoints, or FD when it has none
        via = "own endpoints" if has_own else f"{method} differences"
        base_x = {p: as_numpy(flat[p].value, flat[p].compute_dtype) for p in in_paths}
        for name, fn, how in (
            ("jax", _jax_probes, "jax.vjp and jax.jvp"),
            ("torch", _torch_probes, "backward() and torch.func.jvp"),
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

            def compute(c: Any, fn: Callable = fn) -> Any:
                target_client = (
                    c
                    if has_own
                    else with_finite_differences(
                        c, method=method, eps=eps, cache=shared
                    )
                )
                drawn = make_probes(probes, seed, shapes, base_x)
                # a mode the Tesseract has no endpoint for is not probed (with
                # finite differences, both are)
                if has_own and not own.has_reverse:
                    drawn.cotangents = []
                if has_own and not own.has_forward:
                    drawn.tangents = []
                return fn(target_client, flat, in_paths, out_paths, drawn)

            what = (
                f"{how} along {probes} random cotangents and tangents "
                f"through tess_ad.{name} ({via}"
                + ("" if has_own else ", reusing the reference's evaluations")
                + ")"
            )
            ways.append(_run_way(name, client, compute, what))

    reference = ways[0]
    failures: list[str] = []
    where: list[str] = []
    errors = [
        {"way": w.name, "error": w.error, "hint": w.hint}
        for w in ways
        if w.error is not None
    ]
    for way in ways:
        if way.error is not None:
            continue
        assert way.jacobian is not None  # _run_way sets it whenever error is None
        if reference.jacobian is None or way is reference:
            continue
        for key, label, (pair, ratio), describe in _comparisons(
            way.jacobian,
            reference.jacobian,
            estimate,
            shapes,
            in_paths,
            out_paths,
            rtol,
        ):
            pair["label"] = label
            way.diffs[key] = pair
            if ratio is not None:
                way.ratios[key] = ratio
            if pair["verdict"] == "disagrees":
                failures.append(
                    f"{way.name} disagrees with {reference.name} on {label}"
                )
                worst = pair["worst"]
                if "index" in worst:
                    where.append(
                        f"{way.name}: {describe(worst['index'])} is "
                        f"{worst['actual']:.6g}; finite differences: "
                        f"{worst['expected']:.6g} ± {worst['allowed']:.2g}"
                    )
    status = "error" if errors else ("disagrees" if failures else "agrees")
    return Report(
        {
            "target": target if target is not None else _describe(tesseract),
            "status": status,
            "errors": errors,
            "skipped": skipped,
            "inputs_file": str(inputs_file) if inputs_file is not None else None,
            "method": method,
            "rtol": rtol,
            "k": K,
            "where": where,
            "reference": reference.name,
            "adapters_via": "own endpoints" if has_own else "finite differences",
            "probes": probes,
            "inputs_paths": in_paths,
            "outputs_paths": out_paths,
            "ways": [
                {
                    "name": w.name,
                    "via": w.note,
                    "calls": w.counts,
                    "calls_text": w.calls,
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
        },
        Blocks(
            reference.jacobian or {},
            estimate,
            {w.name: w.ratios for w in ways if w.ratios},
            shapes,
        ),
    )


def _describe(tesseract: Any) -> str:
    """A Tesseract's URL or ``tesseract_api.py`` path, for a report."""
    found = remote_target(tesseract)
    return found[1] if found is not None else type(tesseract).__name__


@dataclass(frozen=True)
class Blocks:
    """The arrays behind a :class:`Report`, which its JSON leaves out (the HTML report draws them).

    ``reference[o][p]`` and ``error[o][p]``: the finite-difference Jacobian
    block of output ``o`` w.r.t. input ``p`` (shape ``o``'s then ``p``'s) and
    its estimated error; ``ratios[way][key]``: ``(way - reference) /
    allowed`` per compared entry, keyed as the way's pairs are (``(o, p)``
    for a Jacobian block, ``("VJP probe k", p)`` or ``(o, "JVP probe k")``
    for a framework's probe).
    """

    reference: Mapping[str, Mapping[str, np.ndarray]]
    error: Mapping[str, Mapping[str, np.ndarray]]
    ratios: Mapping[str, Mapping[tuple[str, str], np.ndarray]]
    output_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


class Report(Mapping[str, Any]):
    """The outcome of :func:`check_gradients`: a read-only mapping, as ``--json`` prints it.

    Keys: ``status`` (``"agrees"``, ``"disagrees"``, ``"error"``), ``ok``,
    ``failures`` (one line per disagreeing way and pair), ``where`` (the
    worst entry of each), ``errors`` (``{"way", "error", "hint"}`` of ways
    that raised; ``hint`` says what to do, or is ``None``), ``skipped``, ``ways`` (each way's calls, seconds and per-pair
    comparison), ``reference``, ``method``, ``k``, ``rtol``, the paths, the
    target and the inputs file.
    """

    def __init__(self, data: dict[str, Any], blocks: Blocks | None = None) -> None:
        self._data = data
        self.blocks = blocks or Blocks({}, {}, {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Report(status={self.status!r}, target={self['target']!r})"

    @property
    def ok(self) -> bool:
        """Whether every way agrees with the reference (and nothing raised)."""
        return bool(self._data["ok"])

    @property
    def status(self) -> str:
        """``"agrees"``, ``"disagrees"`` or ``"error"`` (the Tesseract raised)."""
        return str(self._data["status"])

    @property
    def failures(self) -> list[str]:
        """One line per way and output/input pair that disagrees."""
        return list(self._data["failures"])

    @property
    def where(self) -> list[str]:
        """The worst entry of each disagreement: element, expected, actual, allowed."""
        return list(self._data["where"])

    def to_json(self) -> str:
        """The report as a JSON document (what ``tess-ad check --json`` prints)."""
        return json.dumps(self._data, indent=2)

    def to_html(self) -> str:
        """The report as a self-contained HTML page (what ``tess-ad check --report`` writes).

        The summary, then per output/input pair the reference Jacobian and
        each way's difference from it as heatmaps scaled by the allowed
        difference (PNG images embedded in the page). Needs matplotlib
        (``pip install 'tess-ad[report]'``).

        Raises:
            ImportError: When matplotlib is not installed.
        """
        from ._check_html import render

        return render(self)

    def summary(self) -> str:
        """The verdict in a few lines of text: what disagrees, where, what raised."""
        lines = [f"gradient check of {self['target']}: {self.status}"]
        lines += [f"  - {line}" for line in self.where or self.failures]
        lines += [f"  - error in {e['way']}: {e['error']}" for e in self["errors"]]
        lines += [f"  hint: {hint}" for hint in self.hints]
        if self.inconclusive:
            lines.append(
                f"  inconclusive (reference too noisy): {', '.join(self.inconclusive)}"
            )
        return "\n".join(lines)

    @property
    def hints(self) -> list[str]:
        """What to do about the errors, each hint once (several ways may share one)."""
        return [h for h in dict.fromkeys(e.get("hint") for e in self["errors"]) if h]

    @property
    def inconclusive(self) -> list[str]:
        """The comparisons the reference was too noisy to judge, by label."""
        return sorted(
            {
                p["label"]
                for w in self["ways"]
                for p in w["pairs"]
                if p["verdict"] == "inconclusive"
            }
        )


def assert_gradients(
    tesseract: Any, inputs: Mapping[str, Any], **options: Any
) -> Report:
    """:func:`check_gradients`, raising ``AssertionError`` unless every way agrees.

    For a test suite, in the spirit of ``torch.autograd.gradcheck`` and
    ``jax.test_util.check_grads``: the message names each disagreeing way,
    the entry where it is worst, and what raised.

    Args:
        tesseract: A ``tesseract_core.Tesseract``.
        inputs: The point.
        **options: As for :func:`check_gradients`.

    Returns:
        The report, when it agrees.

    Raises:
        AssertionError: When a way disagrees or the Tesseract raised.

    Example:
        >>> import tess_ad
        >>> from tesseract_core import Tesseract
        >>> t = Tesseract.from_tesseract_api("tests/tesseracts/wrong_gradient/tesseract_api.py")
        >>> tess_ad.assert_gradients(t, {"x": [0.1, 0.5, 2.0], "s": 1.5}, frameworks=())
        Traceback (most recent call last):
        ...
        AssertionError: gradient check of ...: disagrees
          - VJP endpoint: d y[2] / d x[2] is ...
    """
    report = check_gradients(tesseract, inputs, **options)
    if report.status != "agrees":
        raise AssertionError(report.summary())
    return report
