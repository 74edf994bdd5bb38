"""What ``tess-ad check`` says when something goes wrong: one line, what happened, what to do.

:class:`CheckError` is the one error the check raises for a bad target,
inputs or option (the CLI prints it and exits 2). The rest turns the
exceptions a Tesseract raises into one line each (:func:`_first_line`): an
in-process Tesseract wraps its endpoint's exception in a ``RuntimeError``
holding the traceback, and a served one answers with an HTTP error whose body
is a bare "Internal Server Error" or, from a server run with
``TESSERACT_DEBUG=1``, the traceback; :func:`_hint` says what to do about the
bare one. Kept apart from the engine because it knows tesseract-core's error
texts, which change with its versions.
"""

from __future__ import annotations

import re

from ._errors import TesseractConnectionError

__all__ = ["SERVED_500_HINT", "CheckError"]


class CheckError(ValueError):
    """A one-line, user-facing error (bad target, bad inputs).

    ``str()`` is the message followed by the hint, when there is one.

    Attributes:
        message: What happened, and where.
        hint: What to do about it, or ``None``.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        joined = message if hint is None else f"{message.rstrip('.')}. {hint}"
        super().__init__(joined)
        self.message = message
        self.hint = hint


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


LOST_HINT = (
    "Is the server still running? Rerun the check once it answers again (a "
    "check keeps no evaluations between runs)."
)


def _hint(exc: BaseException) -> str | None:
    """What to do about ``exc``, when there is something to say.

    A served Tesseract's bare HTTP 500 (its code raised, the server does not
    say what): :data:`SERVED_500_HINT`; a lost connection: :data:`LOST_HINT`
    (the finite-difference proxy's own advice, about a cache and retries, is
    not the check's to give). When the server ran with
    TESSERACT_DEBUG=1, :func:`_first_line` shows the exception itself and no
    hint is needed.
    """
    http = _http_error(exc)
    if http is not None and http[0] == 500 and _served_exception(http[1]) is None:
        return SERVED_500_HINT
    if isinstance(exc, TesseractConnectionError):
        return LOST_HINT
    return None


def _first_line(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line.

    An in-process Tesseract wraps its endpoint's exception in a
    ``RuntimeError`` whose text is the traceback followed by "Error running
    Tesseract API <endpoint>: ..."; the endpoint's own exception (the last
    line of that traceback) is what is reported, with where it was raised.
    A served Tesseract's error answer is ``HTTP <status> from the served
    Tesseract: <body>``, or, when the body is a traceback (a server run with
    TESSERACT_DEBUG=1), the Tesseract's own exception and endpoint. A lost
    connection says to what and during which endpoint.
    """
    if isinstance(exc, TesseractConnectionError):
        cause = exc.__cause__
        how = f" ({type(cause).__name__})" if cause is not None else ""
        return (
            f"TesseractConnectionError: lost the connection to "
            f"{exc.url or 'the Tesseract'} during {exc.endpoint}{how}"
        )
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
