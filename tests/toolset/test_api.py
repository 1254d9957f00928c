"""``POST /api/v1/toolset/query``."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from groundwork.roles import Role
from toolset.models import Document, ToolCall
from toolset.tasks import sync_search_index

pytestmark = pytest.mark.django_db
URL = "/api/v1/toolset/query"


def test_the_url_is_the_documented_one() -> None:
    assert reverse("toolset-query") == URL


def test_results_come_in_the_ts_order_with_their_shape(corpus: Any, users: Any, api_client: Any) -> None:
    api_client.force_login(users[Role.CROWDWORKER])

    response = api_client.post(URL, {"query": "2*3 jaguar", "session": "a1"}, format="json")
    assert response.status_code == 200, response.content
    assert [(r["tool"], r["title"]) for r in response.json()["results"]] == [("search", "Jaguar")]

    response = api_client.post(URL, {"query": "135+7721", "session": "a1"}, format="json")
    assert response.json() == {
        "results": [{"tool": "calculator", "rank": 1, "title": "", "url": "", "snippet": "7856"}]
    }

    response = api_client.post(URL, {"query": "jaguar rosettes", "session": "a1"}, format="json")
    [result] = response.json()["results"]
    assert result["tool"] == "search"
    assert result["rank"] == 1
    assert result["title"] == "Jaguar"
    assert result["url"] == "https://en.wikipedia.org/wiki/Jaguar"
    assert "rosettes" in result["snippet"]
    assert ToolCall.objects.filter(actor_user=users[Role.CROWDWORKER]).count() == 9


def test_calculator_then_translator_then_search(
    corpus: Any, users: Any, api_client: Any, settings: Any
) -> None:
    settings.TOOLSET_TRANSLATOR_BACKEND = "tests.toolset.test_translator.DictionaryBackend"
    Document.objects.create(
        url="https://example.org/sum", title="Sums", body="Famously, 135 and 7721 add up."
    )
    sync_search_index(["https://example.org/sum"])
    api_client.force_login(users[Role.ADMIN])

    calc = api_client.post(URL, {"query": "135+7721", "session": "o"}, format="json").json()["results"]
    words = api_client.post(URL, {"query": "hello in French", "session": "o"}, format="json").json()[
        "results"
    ]

    assert [(r["tool"], r["snippet"]) for r in calc] == [
        ("calculator", "7856"),
        ("search", "Famously, 135 and 7721 add up."),
    ]
    assert calc[1]["url"] == "https://example.org/sum"
    assert [r["tool"] for r in words] == ["translator", "search"]
    assert words[0]["snippet"] == "Bonjour"


def test_one_tool_only_and_the_repeat_cursor(corpus: Any, users: Any, api_client: Any) -> None:
    api_client.force_login(users[Role.RESEARCHER])
    body = {"query": "cat", "session": "r1", "tool": "search"}
    ranks = [api_client.post(URL, body, format="json").json()["results"][0]["rank"] for _ in range(3)]
    assert ranks == [1, 2, 3]
    assert set(ToolCall.objects.values_list("tool", flat=True)) == {"search"}


def test_anonymous_gets_401(api_client: Any, db: None) -> None:
    response = api_client.post(URL, {"query": "1+1", "session": "s"}, format="json")
    assert response.status_code == 401


def test_validation_errors_name_the_field(users: Any, api_client: Any) -> None:
    api_client.force_login(users[Role.CROWDWORKER])
    response = api_client.post(URL, {"session": "s"}, format="json")
    assert response.status_code == 400
    assert "query" in response.json()
    response = api_client.post(URL, {"query": "1+1", "session": "s", "tool": "oracle"}, format="json")
    assert response.status_code == 400
    assert "tool" in response.json()
    response = api_client.post(URL, {"query": "   ", "session": "s"}, format="json")
    assert response.status_code == 400
    assert "query" in response.json()
    assert ToolCall.objects.count() == 0


def test_queries_are_rate_limited_per_user(users: Any, api_client: Any, settings: Any, tmp_path: Any) -> None:
    from rest_framework.throttling import ScopedRateThrottle

    settings.ARTIFACTS_DIR = tmp_path
    rates = {**ScopedRateThrottle.THROTTLE_RATES, "toolset": "2/min"}
    original = ScopedRateThrottle.THROTTLE_RATES
    ScopedRateThrottle.THROTTLE_RATES = rates  # read once at import by DRF
    try:
        api_client.force_login(users[Role.CROWDWORKER])
        codes = [
            api_client.post(URL, {"query": "1+1", "session": "s"}, format="json").status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        api_client.force_login(users[Role.ADMIN])  # another user has a budget of their own
        assert api_client.post(URL, {"query": "1+1", "session": "s"}, format="json").status_code == 200
    finally:
        ScopedRateThrottle.THROTTLE_RATES = original
