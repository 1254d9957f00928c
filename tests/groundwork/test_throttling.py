"""``groundwork.throttling``: per-user rates in Django's cache, worded for the user."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory

from groundwork.throttling import UserThrottle, page_refusal
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class SearchThrottle(UserThrottle):
    scope = "test_search"
    limited = "searches"
    action = "search"
    timer = Clock()


@pytest.mark.parametrize(
    ("rate", "later", "message", "wait"),
    [
        ("2/min", 20, "your limit of searches (2 a minute). You can search again in 40 seconds.", 40),
        ("2/hour", 59, "your limit of searches (2 an hour). You can search again in 60 minutes.", 3541),
        ("2/day", 3600, "your limit of searches (2 a day). You can search again in 23 hours.", 82800),
    ],
)
def test_a_refusal_says_the_limit_and_when_to_go_on(
    settings: Any, rate: str, later: int, message: str, wait: int
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "test_search": rate},
    }
    request = RequestFactory().post("/")
    request.user = UserFactory()
    start = SearchThrottle.timer.now

    assert page_refusal(request, SearchThrottle) is None
    assert page_refusal(request, SearchThrottle) is None
    SearchThrottle.timer.now = start + later
    refusal = page_refusal(request, SearchThrottle)

    assert refusal is not None
    assert refusal.message == f"You have reached {message}"
    assert refusal.wait == wait
