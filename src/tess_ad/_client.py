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
A wrapper that libraries must accept as a ``tesseract_core.Tesseract``
(tesseract-jax checks ``isinstance``) derives from :class:`TesseractWrapper`,
a subclass of ``Tesseract`` that forwards each of its public members by name.
The OpenAPI wire format (how the schema spells arrays, shapes and dtypes) is
the other borrowed piece; it lives in ``_jsonschema``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from tesseract_core import Tesseract

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
    "TesseractWrapper",
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


def _made_by_wrapping(name: str) -> Callable[..., Any]:
    def refuse(cls: type, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{cls.__name__} wraps a Tesseract and has no {name}(); make the Tesseract "
            f"with tesseract_core.Tesseract.{name}(...) and wrap that"
        )

    refuse.__name__ = name
    refuse.__doc__ = f"Refused: make a ``Tesseract.{name}(...)`` and wrap it."
    return classmethod(refuse)  # type: ignore[return-value]


class TesseractWrapper(ClientWrapper, Tesseract):
    """A client wrapper that is a ``tesseract_core.Tesseract``.

    Code written against tesseract-core may check ``isinstance(t, Tesseract)``
    (tesseract-jax's ``apply_tesseract`` does), so a wrapper meant to stand in
    for a Tesseract subclasses it. It never runs ``Tesseract.__init__`` (which
    refuses direct construction) and holds no connection of its own
    (``_client`` stays ``None``): every public member of ``Tesseract`` is
    defined here and forwards to the wrapped client, with tesseract-core's
    keyword names, so none of ``Tesseract``'s own implementations (which need
    a connection) runs on a wrapper. A test checks that every public member
    of the installed ``Tesseract`` is defined here, so a member added by a
    tesseract-core release fails a test instead of misbehaving.

    Subclasses override the endpoints they change, and :meth:`_rewrap` (the
    same wrapper around another client), which :meth:`with_encoding` uses.
    The ``from_*`` constructors are refused: make a Tesseract, then wrap it.
    """

    from_url = _made_by_wrapping("from_url")
    from_image = _made_by_wrapping("from_image")
    from_tesseract_api = _made_by_wrapping("from_tesseract_api")
    from_source = _made_by_wrapping("from_source")

    def _rewrap(self, client: Any) -> TesseractWrapper:
        raise NotImplementedError(
            f"{type(self).__name__} cannot be re-made around another client"
        )

    # -- lifetime: the wrapped Tesseract's ----------------------------------------

    def __enter__(self) -> TesseractWrapper:
        """Enter the wrapped Tesseract's context (serving it if needed); gives this wrapper."""
        enter = getattr(self.wrapped, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *args: object) -> None:
        """Exit the wrapped Tesseract's context."""
        leave = getattr(self.wrapped, "__exit__", None)
        if leave is not None:
            leave(*args)

    def serve(self) -> None:
        """Serve the wrapped Tesseract."""
        self.wrapped.serve()

    def teardown(self) -> None:
        """Tear the wrapped Tesseract down."""
        self.wrapped.teardown()

    def server_logs(self) -> str:
        """The wrapped Tesseract's server logs."""
        return self.wrapped.server_logs()

    def container_info(self) -> Any:
        """The container serving the wrapped Tesseract."""
        return self.wrapped.container_info()

    def health(self) -> dict:
        """The wrapped Tesseract's health."""
        return self.wrapped.health()

    def test(self, test_spec: dict) -> None:
        """Run a regression test on the wrapped Tesseract."""
        self.wrapped.test(test_spec=test_spec)

    # -- encodings -----------------------------------------------------------------

    @property
    def server_capabilities(self) -> Any:
        """The wrapped Tesseract's server capabilities (``None`` in-process)."""
        return self.wrapped.server_capabilities

    @property
    def current_encoding(self) -> Any:
        """The encoding the wrapped Tesseract's calls request."""
        return self.wrapped.current_encoding

    def resolve_gpu_transport(self) -> str:
        """The GPU transport the wrapped Tesseract's calls should use."""
        return self.wrapped.resolve_gpu_transport()

    def with_encoding(self, **options: Any) -> TesseractWrapper:
        """This wrapper around ``wrapped.with_encoding(**options)``."""
        return self._rewrap(self.wrapped.with_encoding(**options))

    # -- endpoints -----------------------------------------------------------------

    def apply(self, inputs: dict, run_id: str | None = None) -> dict:
        """The wrapped Tesseract's ``apply``."""
        if run_id is None:
            return self.wrapped.apply(inputs=inputs)
        return self.wrapped.apply(inputs=inputs, run_id=run_id)

    def abstract_eval(self, abstract_inputs: dict) -> dict:
        """The wrapped Tesseract's ``abstract_eval``."""
        return self.wrapped.abstract_eval(abstract_inputs=abstract_inputs)

    def jacobian(
        self,
        inputs: dict,
        jac_inputs: list[str],
        jac_outputs: list[str],
        run_id: str | None = None,
    ) -> dict:
        """The wrapped Tesseract's ``jacobian``."""
        extra = {} if run_id is None else {"run_id": run_id}
        return self.wrapped.jacobian(
            inputs=inputs, jac_inputs=jac_inputs, jac_outputs=jac_outputs, **extra
        )

    def jacobian_vector_product(
        self,
        inputs: dict,
        jvp_inputs: list[str],
        jvp_outputs: list[str],
        tangent_vector: dict,
        run_id: str | None = None,
    ) -> dict:
        """The wrapped Tesseract's ``jacobian_vector_product``."""
        extra = {} if run_id is None else {"run_id": run_id}
        return self.wrapped.jacobian_vector_product(
            inputs=inputs,
            jvp_inputs=jvp_inputs,
            jvp_outputs=jvp_outputs,
            tangent_vector=tangent_vector,
            **extra,
        )

    def vector_jacobian_product(
        self,
        inputs: dict,
        vjp_inputs: list[str],
        vjp_outputs: list[str],
        cotangent_vector: dict,
        run_id: str | None = None,
    ) -> dict:
        """The wrapped Tesseract's ``vector_jacobian_product``."""
        extra = {} if run_id is None else {"run_id": run_id}
        return self.wrapped.vector_jacobian_product(
            inputs=inputs,
            vjp_inputs=vjp_inputs,
            vjp_outputs=vjp_outputs,
            cotangent_vector=cotangent_vector,
            **extra,
        )


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
