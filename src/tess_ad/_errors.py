"""The errors every layer raises: defined at the bottom so all can import them.

Both say *where*: a :class:`SchemaError` names the leaf path of the value that
does not fit, a :class:`TesseractConnectionError` the endpoint and URL that
could not be reached.
"""

from __future__ import annotations

__all__ = ["SchemaError", "TesseractConnectionError"]


class SchemaError(ValueError):
    """A value does not fit the Tesseract's schema; the message names the path."""


class TesseractConnectionError(ConnectionError):
    """A served Tesseract could not be reached (after all retries, if any).

    Attributes:
        endpoint: The endpoint that was called (``"openapi_schema"`` for the
            first contact).
        url: The Tesseract's URL (or ``None`` in-process).
        attempts: How many attempts were made.
    """

    def __init__(
        self, message: str, endpoint: str, url: str | None, attempts: int
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.url = url
        self.attempts = attempts
