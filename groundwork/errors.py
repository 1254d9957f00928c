"""The one kind of error a service raises to refuse a request. Pure: no Django import.

Every app's refusals subclass ``DomainError`` (``AnnotationError`` and ``ChatError``,
``TrainerError``, ``ToolsetQueryError`` and ``ToolsetSessionRefused``, ``ImportRefused`` with the
dialog, judgment, document and evaluation set imports' errors, ``EvaluationSetError`` and
``EvaluationSetLocked``, ``TaskQueueUnavailable``, ``ParameterError``):
each carries the HTTP status it is answered with and the message the person who asked reads, and
says what the JSON body and headers of that answer are. ``groundwork.http_errors`` turns them into
answers in one place (the API's exception handler, a middleware for pages, and a helper for pages
that show the message in place), so views do not catch them.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request a rule refuses: ``status`` is the HTTP answer, ``message`` says why."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        """The JSON body of the API's answer."""
        return {"detail": self.message}

    def headers(self) -> dict[str, str]:
        """Headers of the answer (``Retry-After`` when it is worth trying again later)."""
        return {}
