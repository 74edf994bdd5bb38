"""The errors every layer raises: defined at the bottom so all can import them.

Both say *where*: a :class:`SchemaError` names the leaf path of the value that
does not fit, a :class:`TesseractConnectionError` the endpoint and URL that
could not be reached.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

__all__ = ["SchemaError", "TesseractConnectionError"]


class SchemaError(ValidationError):
    """A value does not fit the Tesseract's schema; the message names the path.

    It is a ``pydantic.ValidationError`` (and so a ``ValueError``) because
    that is what a Tesseract, and tesseract-jax's ``apply_tesseract``, raise
    for the same mistake: code written for them (``except ValidationError``,
    ``except ValueError``) catches ours too, while ``except SchemaError``
    catches only tess_ad's checks, made before any endpoint is called (under
    ``jit``: at trace time). Its one pydantic error (``errors()``) has type
    ``tess_ad_schema``, an empty ``loc`` (the message names the path) and the
    message; ``str()`` is the message alone, not pydantic's summary.

    ``SchemaError(message)`` is the whole constructor. (pydantic-core builds
    validation errors itself, from error details; ``__new__`` hands it ours.)
    """

    def __new__(cls, message: Any = "", *rest: Any) -> SchemaError:
        """Build the error from ``message`` (``rest`` is pydantic-core's own call)."""
        if (
            rest
        ):  # pydantic-core creating the instance: (title, errors, input_type, hide)
            return super().__new__(cls, message, *rest)
        detail = InitErrorDetails(
            type=PydanticCustomError(
                "tess_ad_schema", "{message}", {"message": str(message)}
            ),
            loc=(),
            input=None,
        )
        return cls.from_exception_data("tess_ad", [detail])

    def __str__(self) -> str:
        return str(self.errors()[0]["ctx"]["message"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # pydantic-core pickles by error type name, which it cannot look up for
        # a custom type: rebuild from the message (notes travel in __dict__).
        return (type(self), (str(self),), self.__dict__ or None)


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
