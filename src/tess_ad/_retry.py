"""``with_retries``: ride out a served Tesseract's restarts, and bound every call in time.

Long optimisation loops against a served simulator meet connection failures
while its server restarts. ``apply`` is idempotent, so retrying it is safe;
gradient endpoints are retried too, since they are pure functions of their
arguments as well. Only *transient* failures are retried: the connection was
refused, reset or dropped before an answer came (``requests.ConnectionError``
and its kin). An answer that is an error (HTTP 422 validation, a 500 from the
Tesseract's own code, a Python exception in-process) is the Tesseract's final
word and is raised at once, as is a read timeout (the call may still be
running on the server).

Retries back off exponentially, with a bound on attempts and on each delay.
Each retry is logged on the ``tess_ad`` logger (WARNING), counted in
``RetryingTesseract.retries``, and the final error says how many attempts were
made and keeps the last failure as its ``__cause__``.

``timeout=`` bounds each call of a served Tesseract: the proxy talks through
its own HTTP client with that timeout. Endpoints differ in cost (a VJP of a
simulator can take many times its ``apply``), so ``timeout`` may also be a
mapping ``{endpoint: seconds}``; each distinct value gets its own HTTP
client. An in-process call cannot be interrupted, so ``timeout`` is refused
for in-process Tesseracts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._client import ENDPOINTS, ClientWrapper, transient_errors, url_of
from ._errors import TesseractConnectionError
from ._schema import tesseract_schema

__all__ = ["RetryingTesseract", "TesseractConnectionError", "with_retries"]

log = logging.getLogger("tess_ad")


class RetryingTesseract(ClientWrapper):
    """A Tesseract client whose calls retry transient connection failures.

    Made by :func:`with_retries`; see there for the arguments.
    """

    def __init__(
        self,
        tesseract: Any,
        *,
        attempts: int = 5,
        backoff: float = 0.25,
        max_delay: float = 4.0,
        timeout: float | Mapping[str, float] | None = None,
    ) -> None:
        if not callable(getattr(tesseract, "apply", None)):
            raise TypeError(
                f"with_retries expects a Tesseract client with an apply method, got {type(tesseract).__name__}"
            )
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be a positive integer, got {attempts!r}")
        for name, value in (("backoff", backoff), ("max_delay", max_delay)):
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(
                    f"{name} must be a non-negative number of seconds, got {value!r}"
                )
        self.url = url_of(tesseract)
        # endpoint -> a client of the same server whose calls time out as asked
        self._timed: dict[str, Any] = {}
        if timeout is not None:
            seconds = _endpoint_timeouts(timeout)
            if self.url is None:
                raise TypeError(
                    "timeout applies to served Tesseracts (Tesseract.from_url); an in-process "
                    "call cannot be interrupted. Serve the Tesseract, or leave timeout=None."
                )
            from tesseract_core import Tesseract

            clients: dict[float, Any] = {}
            for endpoint, value in seconds.items():
                if value not in clients:
                    clients[value] = Tesseract.from_url(self.url, timeout=value)
                self._timed[endpoint] = clients[value]
        super().__init__(tesseract)
        self.attempts = attempts
        self.backoff = float(backoff)
        self.max_delay = float(max_delay)
        self.timeout = timeout
        self.retries = 0
        self._lock = threading.Lock()
        self._transient = transient_errors()
        # The first contact (the OpenAPI schema) is retried like any call, so a
        # server that is still starting does not fail the construction.
        if hasattr(type(tesseract), "openapi_schema"):
            self._call("openapi_schema", lambda: tesseract.openapi_schema, (), {})
        self.tess_ad_schema = tesseract_schema(tesseract)

    def __repr__(self) -> str:
        return f"with_retries({self.wrapped!r}, attempts={self.attempts})"

    def __getattr__(self, name: str) -> Any:
        if name not in ENDPOINTS:
            return super().__getattr__(name)
        attr = getattr(self._timed.get(name, self.wrapped), name)
        return lambda *args, **kwargs: self._call(name, attr, args, kwargs)

    def apply(self, inputs: dict, run_id: str | None = None) -> dict:
        """``apply``, retried on transient connection failures."""
        kwargs: dict[str, Any] = {"inputs": inputs}
        if run_id is not None:
            kwargs["run_id"] = run_id
        client = self._timed.get("apply", self.wrapped)
        return self._call("apply", client.apply, (), kwargs)

    def _call(self, endpoint: str, fn: Callable, args: tuple, kwargs: dict) -> Any:
        delay = self.backoff
        started = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except self._transient as exc:
                where = f"{endpoint} at {self.url}" if self.url else endpoint
                if attempt == self.attempts:
                    raise TesseractConnectionError(
                        f"{where}: connection failed after {attempt} attempt(s) over "
                        f"{time.monotonic() - started:.1f} s ({type(exc).__name__}: {exc}). "
                        "Is the Tesseract's server running? Raise attempts=/max_delay= "
                        "to wait longer for a restart.",
                        endpoint,
                        self.url,
                        attempt,
                    ) from exc
                with self._lock:
                    self.retries += 1
                log.warning(
                    "tess_ad: %s failed (%s); retry %d of %d in %.2f s",
                    where,
                    type(exc).__name__,
                    attempt,
                    self.attempts - 1,
                    delay,
                )
                time.sleep(delay)
                delay = min(2 * delay if delay > 0 else self.backoff, self.max_delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _endpoint_timeouts(timeout: float | Mapping[str, float]) -> dict[str, float]:
    """``{endpoint: seconds}`` from one number (every endpoint) or a mapping."""
    if isinstance(timeout, Mapping):
        unknown = sorted(set(timeout) - set(ENDPOINTS))
        if unknown:
            raise ValueError(
                f"timeout names unknown endpoint(s) {', '.join(map(repr, unknown))}; "
                f"endpoints are {', '.join(ENDPOINTS)}"
            )
        items = [(f"timeout[{k!r}]", k, v) for k, v in timeout.items()]
    else:
        items = [("timeout", k, timeout) for k in ENDPOINTS]
    seconds = {}
    for name, endpoint, value in items:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(
                f"{name} must be a positive number of seconds, got {value!r}"
            )
        seconds[endpoint] = float(value)
    return seconds


def with_retries(
    tesseract: Any,
    *,
    attempts: int = 5,
    backoff: float = 0.25,
    max_delay: float = 4.0,
    timeout: float | Mapping[str, float] | None = None,
) -> RetryingTesseract:
    """Wrap a Tesseract so transient connection failures are retried, with backoff.

    The result has the client interface of ``tesseract_core.Tesseract`` and
    composes with everything else in tess_ad:
    ``with_finite_differences(with_retries(t))``,
    ``tess_ad.jax.apply_tesseract(with_retries(t), inputs)``.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` (retries matter for served ones).
        attempts: Total attempts per call (1 = no retry).
        backoff: Delay before the first retry, in seconds; it doubles each time.
        max_delay: Upper bound of a single delay, in seconds.
        timeout: Seconds each call of a served Tesseract may take before it
            fails with a timeout (not retried), or ``None`` for no limit; or
            ``{endpoint: seconds}`` to bound some endpoints only, or each
            differently (e.g. ``{"apply": 60, "vector_jacobian_product": 600}``).

    Returns:
        The retrying client; ``.retries`` counts the retries made so far.

    Raises:
        ValueError: For a non-positive ``attempts`` or ``timeout``, a
            ``timeout`` naming an unknown endpoint, or a negative delay.
        TypeError: If ``timeout`` is given for an in-process Tesseract.

    Example:
        >>> from tesseract_core import Tesseract
        >>> t = with_retries(Tesseract.from_url("http://127.0.0.1:8000"), attempts=8)  # doctest: +SKIP
        >>> t.apply(inputs)  # survives the server restarting meanwhile  # doctest: +SKIP
    """
    return RetryingTesseract(
        tesseract,
        attempts=attempts,
        backoff=backoff,
        max_delay=max_delay,
        timeout=timeout,
    )
