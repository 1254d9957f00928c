"""Errors as HTTP answers, in one place: views raise, they do not catch (STYLE.md, errors).

- ``exception_handler`` is DRF's ``EXCEPTION_HANDLER``: a ``groundwork.errors.DomainError`` that
  an API view lets out is answered with its status, its JSON body (``{"detail": message}``, or
  what the error says: the bad lines of an import, the field of a query) and its headers
  (``Retry-After`` on the 503 of a broker that is down); Django's body errors become JSON too.
- ``DomainErrorMiddleware`` answers one that a page lets out: JSON under /api/, else the
  not-found page (404), the not-allowed page (403), "try again shortly" (503), or a page with the
  message.
- ``shows_refusals`` is for the pages that show the message in place (the rating form, the chat):
  the view raises, and the decorator renders the page again with the error, with the status
  ``refusal_status`` gives it (htmx swaps no 4xx answer).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import TooManyFilesSent
from django.shortcuts import render
from django.views import defaults
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from groundwork.errors import DomainError
from groundwork.parsers import RequestTooLarge

PageView = Callable[..., HttpResponse]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The domain's errors (a bad query parameter among them: 400 ``{name: [problem]}``), JSON for
    the body errors Django raises while DRF reads a form body (too large: 413; too many fields or
    files: 400), and DRF's own handler for the rest."""
    if isinstance(exc, DomainError):
        set_rollback()
        return Response(exc.body(), status=exc.status, headers=exc.headers())
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = RequestTooLarge(f"The request body is over the limit of {limit:,} bytes.")
    elif isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        exc = ParseError(str(exc))
    return drf_exception_handler(exc, context)


class DomainErrorMiddleware:
    """Answers a request that a ``DomainError`` stopped outside DRF: JSON under /api/, a page
    for people elsewhere (the admin's buttons that queue work answer 503 this way)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DomainError):
            return None
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(exception.body(), status=exception.status)
        elif exception.status == 404:
            response = defaults.page_not_found(request, Http404(exception.message))
        elif exception.status == 403:
            response = defaults.permission_denied(request, PermissionDenied(exception.message))
        else:
            template = "503.html" if exception.status == 503 else "refused.html"
            response = render(request, template, {"message": exception.message}, status=exception.status)
        for name, value in exception.headers().items():
            response[name] = value
        return response


def refusal_status(request: HttpRequest, error: DomainError) -> int:
    """The status of a page that shows ``error`` in place: htmx swaps no 4xx answer, so an htmx
    request gets 200 (the message is in the part it swaps), a plain form post the error's own."""
    return 200 if getattr(request, "htmx", False) else error.status


def shows_refusals(page: Callable[..., HttpResponse]) -> Callable[[PageView], PageView]:
    """A page view whose ``DomainError`` is shown on the page: ``page(request, error, **kwargs)``
    (the view's URL arguments) renders it. An error ``page`` raises itself goes to the middleware
    (another worker's chat: the not-found page)."""

    def decorator(view: PageView) -> PageView:
        @wraps(view)
        def showing(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return view(request, *args, **kwargs)
            except DomainError as error:
                return page(request, error, *args, **kwargs)

        return showing

    return decorator
