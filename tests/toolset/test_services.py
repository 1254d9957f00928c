"""``toolset.services``: document import, the index after commit, and toolset queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from groundwork.roles import Role
from tests.factories import UserFactory
from toolset.models import Document, ToolCall
from toolset.services import (
    DocumentImportError,
    ToolResult,
    ToolsetQueryError,
    ToolsetSessionRefused,
    documents_import,
    search_index,
    toolset_query,
)
from toolset.tasks import search_index_sync_task

pytestmark = pytest.mark.django_db


def article(n: int, text: str = "", **extra: Any) -> str:
    obj = {
        "id": str(n),
        "url": f"https://en.wikipedia.org/wiki?curid={n}",
        "title": f"Article {n}",
        "text": text or f"Article {n} is about topic{n}.",
        **extra,
    }
    return json.dumps({k: v for k, v in obj.items() if v is not None})


# --- import -----------------------------------------------------------------------------------
def test_import_creates_documents_and_indexes_them_after_commit(
    settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    with django_capture_on_commit_callbacks() as callbacks:
        result = documents_import(lines=[article(1), "", article(2)], source="wiki.jsonl")

    assert (result.created, result.updated, result.unchanged) == (2, 0, 0)
    assert set(Document.objects.values_list("title", "source")) == {
        ("Article 1", "wiki.jsonl"),
        ("Article 2", "wiki.jsonl"),
    }
    assert len(callbacks) == 1
    assert search_index().search("topic2", 5) == []  # the index follows only in the task
    # No broker here: run what the callback enqueues, the task, directly.
    search_index_sync_task(result.urls)
    assert [hit.title for hit in search_index().search("topic2", 5)] == ["Article 2"]


def test_reimport_changes_nothing_and_other_content_updates(
    settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    documents_import(lines=[article(1), article(2)], source="a")

    with django_capture_on_commit_callbacks() as callbacks:
        same = documents_import(lines=[article(1), article(2)], source="b")
    assert (same.created, same.updated, same.unchanged) == (0, 0, 2)
    assert callbacks == []  # nothing changed, nothing to index
    assert set(Document.objects.values_list("source", flat=True)) == {"a"}

    changed = documents_import(lines=[article(1, "Now about zebras."), article(2)], source="c")
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 1)
    assert Document.objects.get(title="Article 1").body == "Now about zebras."
    assert Document.objects.count() == 2


def test_bad_lines_are_reported_with_line_and_field_and_nothing_is_written() -> None:
    lines = [
        article(1),
        article(2, url="ftp://example.org/2"),
        article(3, text="   "),
        json.dumps({"id": "4", "title": "No URL", "text": "x"}),
        "{not json",
        article(6, title=None),
        article(1),  # duplicate URL of line 1
        json.dumps(["a list"]),
    ]
    with pytest.raises(DocumentImportError) as caught:
        documents_import(lines=lines, source="bad")

    assert [(e.line, e.field) for e in caught.value.errors] == [
        (2, "url"),
        (3, "text"),
        (4, "url"),
        (5, "(json)"),
        (6, "title"),
        (7, "url"),
        (8, "(json)"),
    ]
    assert "ftp://" in caught.value.errors[0].message
    assert Document.objects.count() == 0


def test_import_documents_command(tmp_path: Path, settings: Any) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    good = tmp_path / "good.jsonl"
    good.write_text(article(1) + "\n" + article(2) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(article(3) + "\n" + article(4, url="not a url") + "\n")

    call_command("import_documents", str(good))
    assert Document.objects.count() == 2
    with pytest.raises(CommandError, match="1 bad line"):
        call_command("import_documents", str(bad))
    assert Document.objects.count() == 2


# --- toolset queries --------------------------------------------------------------------------
def test_repeating_a_query_in_a_session_serves_the_next_ranked_snippet(corpus: Any) -> None:
    user = UserFactory(role=Role.CROWDWORKER)

    def ask(session: str) -> list[ToolResult]:
        return toolset_query(session=session, query="large cat", actor_user=user, tool="search")

    first, second, third = ask("s1"), ask("s1"), ask("s1")
    assert [r.rank for r in first + second + third] == [1, 2, 3]
    assert len({r.url for r in first + second + third}) == 3
    assert ask("s2") == first  # a new session starts at rank 1 again
    assert list(
        ToolCall.objects.filter(session="s1").order_by("id").values_list("tool", "rank", "actor_user")
    ) == [("search", 1, user.pk), ("search", 2, user.pk), ("search", 3, user.pk)]
    assert ToolCall.objects.filter(session="s1", rank=2).get().results[0]["url"] == second[0].url


def test_past_the_last_result_search_gives_nothing_but_still_logs(corpus: Any) -> None:
    for _ in range(4):
        toolset_query(session="s", query="jaguar", tool="search")
    assert toolset_query(session="s", query="jaguar", tool="search") == []
    assert ToolCall.objects.filter(session="s").count() == 5


def test_every_tool_runs_in_the_ts_order_and_each_call_is_logged(corpus: Any, settings: Any) -> None:
    settings.TOOLSET_TRANSLATOR_BACKEND = "tests.toolset.test_translator.DictionaryBackend"
    Document.objects.create(
        url="https://example.org/hello", title="Hello", body="Hello in French is Bonjour."
    )
    search_index_sync_task(["https://example.org/hello"])

    results = toolset_query(session="s", query="hello in French", actor_model="lamda-v3")

    assert [(r.tool, r.rank, r.url) for r in results] == [
        ("translator", 1, ""),
        ("search", 1, "https://example.org/hello"),
    ]
    assert results[0].snippet == "Bonjour"
    calls = ToolCall.objects.order_by("id")
    assert [(c.tool, c.actor_model, c.actor_user_id) for c in calls] == [
        ("calculator", "lamda-v3", None),
        ("translator", "lamda-v3", None),
        ("search", "lamda-v3", None),
    ]
    assert calls[0].results == []  # ran, could not parse, contributed nothing


def test_the_calculator_answer_comes_first_and_has_no_url(corpus: Any) -> None:
    assert toolset_query(session="s", query="135+7721") == [
        ToolResult(tool="calculator", rank=1, title="", url="", snippet="7856")
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"session": "s", "query": "   "}, "query"),
        ({"session": "", "query": "x"}, "session"),
        ({"session": "s", "query": "x" * 501}, "query"),
        ({"session": "s", "query": "x", "tool": "oracle"}, "tool"),
    ],
)
def test_bad_queries_are_refused_and_not_logged(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ToolsetQueryError) as caught:
        toolset_query(**kwargs)
    assert caught.value.field == field
    assert ToolCall.objects.count() == 0


def test_the_model_has_a_repeat_cursor_of_its_own(corpus: Any) -> None:
    user = UserFactory(role=Role.CROWDWORKER)

    def ask(**actor: Any) -> int:
        return toolset_query(session="s1", query="large cat", tool="search", **actor)[0].rank

    assert [ask(actor_user=user), ask(actor_model="m1"), ask(actor_model="m1"), ask(actor_model="m2")] == [
        1,
        1,
        2,
        1,
    ]


def test_the_session_check_decides_who_may_query_in_a_session(corpus: Any, settings: Any) -> None:
    """toolset asks ``TOOLSET_SESSION_CHECK`` (a dotted path: it imports no other app) about each
    user's query; a model's queries are not asked about."""
    settings.TOOLSET_SESSION_CHECK = "tests.toolset.test_services.only_in_open_sessions"
    user = UserFactory(role=Role.CROWDWORKER)

    with pytest.raises(ToolsetSessionRefused, match="closed-1 is closed"):
        toolset_query(session="closed-1", query="large cat", actor_user=user)
    assert toolset_query(session="open-1", query="large cat", actor_user=user)
    assert toolset_query(session="closed-1", query="large cat", actor_model="m1")
    assert not ToolCall.objects.filter(actor_user=user, session="closed-1").exists()


def only_in_open_sessions(*, session: str, user: Any) -> None:
    if session.startswith("closed-"):
        raise ToolsetSessionRefused(f"{session} is closed", status=403)
