"""Rate limits per user, counted in Django's cache (``django.core.cache``), so that every web
process shares them when the cache is shared: DRF's throttles on API views, and the same
throttle classes applied to the request of a page. One implementation, two doors.

A throttle names its scope; its rate is ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]``
(e.g. ``"12/min"``), read when a request comes. Refused, an API request gets 429 with
``{"detail"}`` and a ``Retry-After`` header; a page shows the same sentence, which says when
the user may go on (``Refusal``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, UserRateThrottle

_PER = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}


def _duration(seconds: int) -> str:
    """``seconds`` in the largest unit that says it, rounded up: "40 seconds", "12 minutes"."""
    unit, name = (3600, "hour") if seconds >= 3600 else (60, "minute") if seconds >= 60 else (1, "second")
    n = max(1, math.ceil(seconds / unit))
    return f"{n} {name}" if n == 1 else f"{n} {name}s"


class UserThrottle(UserRateThrottle):
    """A rate per signed-in user (per address for anyone else) for ``scope``.

    DRF reads the rates once, when it is imported; this reads them per request, so a rate
    changed in the settings applies at once. ``limited`` and ``action`` word the refusal:
    "You have reached your limit of messages (12 a minute). You can send a message again in
    40 seconds."
    """

    limited = "requests"
    action = "try"

    def get_rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(
                f"No rate for the throttle scope {self.scope!r} in REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']."
            )
        return rates[self.scope]

    def refusal(self) -> Refusal:
        """Why the request that ``allow_request`` refused was refused, and for how long."""
        wait = math.ceil(self.wait() or self.duration)
        per = _PER.get(self.duration, f"per {_duration(self.duration)}")
        return Refusal(
            message=(
                f"You have reached your limit of {self.limited} ({self.num_requests} {per}). "
                f"You can {self.action} again in {_duration(wait)}."
            ),
            wait=wait,
        )


@dataclass(frozen=True)
class Refusal:
    message: str
    wait: int  # seconds until the user may go on


def first_refusal(
    request: HttpRequest | Request, throttles: Iterable[BaseThrottle], view: Any = None
) -> Refusal | None:
    """The refusal of the first of ``throttles`` that does not allow ``request`` (each one that
    allows it counts it), or None. Works on a page's request as on an API view's."""
    for throttle in throttles:
        if not throttle.allow_request(request, view):
            if isinstance(throttle, UserThrottle):
                return throttle.refusal()
            wait = math.ceil(throttle.wait() or 0)
            return Refusal(f"Too many requests: try again in {_duration(wait)}.", wait)
    return None


def page_refusal(request: HttpRequest, *throttle_classes: type[BaseThrottle]) -> Refusal | None:
    """``first_refusal`` for a page: the throttle classes an API view would list."""
    return first_refusal(request, [throttle_class() for throttle_class in throttle_classes])


def with_retry_after(response: HttpResponse, refusal: Refusal) -> HttpResponse:
    """A page's answer to a refused request, with when to ask again."""
    response["Retry-After"] = str(refusal.wait)
    return response


class RateLimited(exceptions.Throttled):
    """A DRF 429 whose ``detail`` is the throttle's own sentence (DRF's exception handler adds
    ``Retry-After`` from ``wait``)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(wait=refusal.wait)
        self.detail = exceptions.ErrorDetail(refusal.message, code=self.default_code)


class ExplainedThrottles:
    """An ``APIView`` mixin: a throttled request is answered with the throttle's own sentence."""

    def check_throttles(self, request: Request) -> None:
        refusal = first_refusal(request, self.get_throttles(), view=self)  # type: ignore[attr-defined]
        if refusal is not None:
            raise RateLimited(refusal)
