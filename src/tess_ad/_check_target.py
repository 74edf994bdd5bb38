"""Where a check's Tesseract and inputs come from: ``tess-ad check TARGET``'s loading.

A target is a ``tesseract_api.py``, a folder holding one, or a URL (probed
once, bounded in time, so that a server that is not there or is not a
Tesseract is one clear error rather than a client's retries and urllib3's
text). The inputs are ``--inputs`` or the first example file beside the
Tesseract, in the order tesseract-core's own examples keep them; inputs the
schema gives a default are filled in, so a ``Differentiable`` input left at
its default is checked too.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._check_errors import CheckError, _first_line
from ._client import url_of
from ._runtime import require_runtime

__all__ = ["PROBE_TIMEOUT", "load_inputs", "load_target", "with_defaults"]


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
        f"Is it served? Start it with `tesseract serve NAME --port {port}` or "
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
