"""``POST /api/v1/toolset/query`` and ``POST /api/v1/toolset/documents``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from groundwork.roles import Role
from toolset.models import Document, ToolCall
from toolset.search import SearchIndex
from toolset.services import SEARCH_MAX_RANK, search_index
from toolset.tasks import search_index_sync_task

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
    Document.objects.create(
        url="https://example.org/greetings", title="Greetings", body="Hello is said in French as bonjour."
    )
    search_index_sync_task(["https://example.org/sum", "https://example.org/greetings"])
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


# --- POST /api/v1/toolset/documents -----------------------------------------------------------
IMPORT_URL = "/api/v1/toolset/documents"


def wiki_line(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(n),
        "url": f"https://en.wikipedia.org/wiki?curid={n}",
        "title": f"Article {n}",
        "text": f"Article {n} is about topic{n}.",
        **extra,
    }


def ndjson(*objects: dict[str, Any]) -> bytes:
    return b"\n".join(json.dumps(obj).encode() for obj in objects) + b"\n"


def test_the_import_url_is_the_documented_one() -> None:
    assert reverse("toolset-documents-import") == IMPORT_URL


def test_admin_imports_wikiextractor_jsonl_and_the_index_follows(
    users: Any, api_client: Any, settings: Any, tmp_path: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    api_client.force_login(users[Role.ADMIN])

    with django_capture_on_commit_callbacks() as callbacks:
        response = api_client.post(
            IMPORT_URL, ndjson(wiki_line(1), wiki_line(2)), content_type="application/x-ndjson"
        )

    assert response.status_code == 201, response.content
    assert response.json() == {"created": 2, "updated": 0, "unchanged": 0}
    assert set(Document.objects.values_list("title", "source")) == {
        ("Article 1", "api"),
        ("Article 2", "api"),
    }
    assert len(callbacks) == 1  # the index sync, enqueued after commit
    search_index_sync_task([d.url for d in Document.objects.all()])  # what the worker runs
    assert [h.title for h in search_index().search("topic2", 5)] == ["Article 2"]

    again = api_client.post(IMPORT_URL, [wiki_line(1), wiki_line(2, text="Now about zebras.")], format="json")
    assert again.status_code == 201, again.content
    assert again.json() == {"created": 0, "updated": 1, "unchanged": 1}
    assert Document.objects.get(title="Article 2").body == "Now about zebras."


def test_a_bad_line_is_reported_with_its_line_and_field_and_nothing_is_written(
    users: Any, api_client: Any
) -> None:
    api_client.force_login(users[Role.ADMIN])
    body = ndjson(wiki_line(1), wiki_line(2, url="ftp://example.org/2")) + b"{oops\n"

    response = api_client.post(IMPORT_URL, body, content_type="application/x-ndjson")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [(2, "url"), (3, "(json)")]
    assert "ftp://example.org/2" in errors[0]["message"]
    assert Document.objects.count() == 0

    listed = api_client.post(IMPORT_URL, [wiki_line(1), {"url": "https://example.org/x"}], format="json")
    assert listed.status_code == 400
    assert [(e["line"], e["field"]) for e in listed.json()["errors"]] == [(2, "title")]
    assert Document.objects.count() == 0


@pytest.mark.parametrize(("role", "code"), [(None, 401), (Role.CROWDWORKER, 403), (Role.RESEARCHER, 403)])
def test_only_admins_import_documents(users: Any, api_client: Any, role: Role | None, code: int) -> None:
    if role is not None:
        api_client.force_login(users[role])
    response = api_client.post(IMPORT_URL, [wiki_line(1)], format="json")
    assert response.status_code == code
    assert Document.objects.count() == 0


def test_the_repeat_cursor_is_each_users_own(corpus: Any, users: Any, api_client: Any) -> None:
    """Another user's repeats of a query in the session do not move this user's next rank."""
    body = {"query": "cat", "session": "shared", "tool": "search"}

    def ranks(role: Role, times: int) -> list[int]:
        api_client.force_login(users[role])
        return [api_client.post(URL, body, format="json").json()["results"][0]["rank"] for _ in range(times)]

    assert ranks(Role.ADMIN, 2) == [1, 2]
    assert ranks(Role.RESEARCHER, 1) == [1]
    assert ranks(Role.ADMIN, 1) == [3]
    assert sorted(ToolCall.objects.values_list("actor_user__username", "rank")) == sorted(
        [(users[Role.ADMIN].username, r) for r in (1, 2, 3)] + [(users[Role.RESEARCHER].username, 1)]
    )


def test_a_url_with_a_control_character_is_refused_naming_line_and_field(users: Any, api_client: Any) -> None:
    api_client.force_login(users[Role.ADMIN])

    response = api_client.post(
        IMPORT_URL, [wiki_line(1), wiki_line(2, url="https://example.org/a\x07b")], format="json"
    )

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["line"], error["field"]) == (2, "url")
    assert "contains a control character (U+0007)" in error["message"]
    assert Document.objects.count() == 0


def test_the_repeat_cursor_answers_nothing_past_the_last_rank_without_searching(
    corpus: Any, users: Any, api_client: Any, monkeypatch: Any
) -> None:
    """The n-th repeat of a query ranked n documents: unbounded work for a client that repeats."""
    worker = users[Role.CROWDWORKER]
    ToolCall.objects.bulk_create(
        ToolCall(session="s", query="cat", tool="search", rank=rank, actor_user=worker)
        for rank in range(1, SEARCH_MAX_RANK + 1)
    )

    def no_search(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("searched past the last rank")

    monkeypatch.setattr(SearchIndex, "search", no_search)
    api_client.force_login(worker)

    response = api_client.post(URL, {"query": "cat", "session": "s", "tool": "search"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"results": []}
    assert ToolCall.objects.filter(session="s", rank=SEARCH_MAX_RANK + 1, results=[]).exists()
