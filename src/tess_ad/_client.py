"""Everything tess_ad borrows from tesseract-core's client, in one place.

tess_ad talks to a Tesseract only through the public methods of
``tesseract_core.Tesseract`` (``apply``, the gradient endpoints,
``abstract_eval``, ``openapi_schema``), described by :class:`TesseractClient`.
A few things it needs are not public there, and live here so that the next
tesseract-core release means one file to check:

* the URL of a served client and the ``tesseract_api`` module of an
  in-process one (``Tesseract._client.url`` / ``._client.api_module``): what
  a dask worker needs to make its own client, what an error message names,
  and what ``with_retries(timeout=)`` reconnects to;
* which exceptions mean "the connection failed, nothing was answered"
  (``requests``' connection errors: transient, safe to retry);
* the endpoint names, and how users know them (``vector_jacobian_product
  (VJP)``).

Every tess_ad wrapper of a client (:func:`tess_ad.with_finite_differences`,
:func:`tess_ad.with_retries`, the call counter of ``tess-ad check``) derives
from :class:`ClientWrapper`, which forwards what the wrapper does not define.
The OpenAPI wire format (how the schema spells arrays, shapes and dtypes) is
the other borrowed piece; it lives in ``_jsonschema``.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

from ._runtime import require_runtime

__all__ = [
    "ABSTRACT_EVAL",
    "APPLY",
    "ENDPOINTS",
    "GRADIENT_ENDPOINTS",
    "JAC",
    "JVP",
    "VJP",
    "ClientWrapper",
    "TesseractClient",
    "client_for",
    "endpoint_label",
    "remote_target",
    "transient_errors",
    "url_of",
]

APPLY = "apply"
JAC = "jacobian"
JVP = "jacobian_vector_product"
VJP = "vector_jacobian_product"
ABSTRACT_EVAL = "abstract_eval"
ENDPOINTS: tuple[str, ...] = (APPLY, JAC, JVP, VJP, ABSTRACT_EVAL)
GRADIENT_ENDPOINTS: tuple[str, ...] = (JAC, JVP, VJP)
_SHORT = {JVP: "JVP", VJP: "VJP"}


def endpoint_label(name: str, *, short: bool = False) -> str:
    """How users know an endpoint: ``vector_jacobian_product (VJP)``, or ``VJP`` if ``short``."""
    if name not in _SHORT:
        return name
    return _SHORT[name] if short else f"{name} ({_SHORT[name]})"


@runtime_checkable
class TesseractClient(Protocol):
    """What tess_ad expects of a Tesseract client (``tesseract_core.Tesseract``).

    ``apply`` and ``openapi_schema`` are required. The gradient endpoints
    (``jacobian``, ``jacobian_vector_product``, ``vector_jacobian_product``)
    and ``abstract_eval`` are used when the OpenAPI schema lists them, with
    tesseract-core's signatures. tess_ad calls every endpoint with
    tesseract-core's keyword names (``apply(inputs=...)``,
    ``vector_jacobian_product(inputs=, vjp_inputs=, vjp_outputs=,
    cotangent_vector=)``, ``abstract_eval(abstract_inputs=)``...), so a client
    or wrapper whose methods take keywords only works as well.
    """

    @property
    def openapi_schema(self) -> dict: ...

    def apply(self, inputs: dict, run_id: str | None = None) -> dict: ...


class ClientWrapper:
    """Base of tess_ad's client wrappers: forwards what a wrapper does not define.

    Attributes:
        wrapped: The client this one wraps.
    """

    wrapped: Any

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    @property
    def openapi_schema(self) -> dict:
        """The wrapped client's OpenAPI schema."""
        return self.wrapped.openapi_schema

    @property
    def available_endpoints(self) -> list[str]:
        """The wrapped client's endpoints."""
        return self.wrapped.available_endpoints

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class does not define. Private names are
        # not forwarded: a wrapper is not the client it wraps (``_client`` of a
        # served client stays the wrapped client's business).
        if name.startswith("_") or name == "wrapped":
            raise AttributeError(name)
        return getattr(self.wrapped, name)


def _client_of(tesseract: Any) -> Any:
    return getattr(tesseract, "_client", None)


def url_of(tesseract: Any) -> str | None:
    """The URL of a served ``tesseract_core.Tesseract``, ``None`` for anything else.

    Wrappers are *not* seen through: a wrapper's calls are not the server's.
    """
    url = getattr(_client_of(tesseract), "url", None)
    return url if isinstance(url, str) else None


def remote_target(tesseract: Any) -> tuple[str, str] | None:
    """A picklable description of a client: ``("url", url)`` or ``("api", path)``.

    tess_ad's own wrappers are seen through (at most 16 deep): a dask worker
    calls the innermost Tesseract's ``apply`` directly, and a failed task is
    dask's to retry (``Client.submit(..., retries=)``).
    """
    for _ in range(16):
        inner = getattr(tesseract, "wrapped", None)
        if _client_of(tesseract) is not None or inner is None:
            break
        tesseract = inner
    url = url_of(tesseract)
    if url is not None:
        return ("url", url)
    module = getattr(_client_of(tesseract), "api_module", None)
    path = getattr(module, "__file__", None)
    return ("api", path) if isinstance(path, str) else None


_WORKER_CLIENTS: dict[tuple[str, str], Any] = {}
_WORKER_LOCK = threading.Lock()


def client_for(target: tuple[str, str]) -> Any:
    """The client a :func:`remote_target` describes, made once per process and target."""
    with _WORKER_LOCK:
        client = _WORKER_CLIENTS.get(target)
        if client is None:
            from tesseract_core import Tesseract

            kind, where = target
            if kind != "url":
                require_runtime(f"loading {where} on a dask worker")
            client = (
                Tesseract.from_url(where)
                if kind == "url"
                else Tesseract.from_tesseract_api(where)
            )
            _WORKER_CLIENTS[target] = client
    return client


def transient_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning the connection failed before any answer (safe to retry).

    Refused, reset or aborted connections, and ``requests``' connection and
    chunked-encoding errors. An HTTP error answer, a read timeout or an
    exception raised by the Tesseract's own code is not among them.
    """
    errors: list[type[BaseException]] = [
        ConnectionRefusedError,
        ConnectionResetError,
        ConnectionAbortedError,
    ]
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with tesseract-core
        return tuple(errors)
    errors += [requests.ConnectionError, requests.exceptions.ChunkedEncodingError]
    return tuple(errors)
