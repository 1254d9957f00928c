"""``toolset.search``: BM25 ranking over a fixture corpus, snippets, tolerant queries."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from toolset.models import Document
from toolset.search import SNIPPET_MAX_CHARS, SearchIndex
from toolset.services import search_index, search_index_sync

pytestmark = pytest.mark.django_db


def urls(query: str, limit: int = 10) -> list[str]:
    return [hit.url.rsplit("/", 1)[1] for hit in search_index().search(query, limit)]


def test_the_best_matching_document_ranks_first(corpus: Any) -> None:
    assert urls("jaguar")[0] == "Jaguar"
    assert urls("lion savanna")[0] == "Lion"
    assert urls("domesticated pets")[0] == "Cat"
    hits = search_index().search("jaguar", 10)
    assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))


def test_a_rare_term_outweighs_a_common_one(corpus: Any) -> None:
    # "cat" is in every document (and often in Cat's); "rosettes" only in Jaguar's.
    assert urls("cat rosettes")[0] == "Jaguar"
    assert urls("cat")[0] == "Cat"


def test_the_limit_and_no_match(corpus: Any) -> None:
    assert len(urls("cat", limit=2)) == 2
    assert urls("xylophone") == []


def test_the_snippet_is_the_matching_passage_not_the_start(corpus: Any) -> None:
    [hit] = search_index().search("Davis Cup Malaga", 1)
    assert hit.title == "Rafael Nadal"
    assert hit.url == "https://en.wikipedia.org/wiki/Rafael_Nadal"
    assert "Davis Cup" in hit.snippet
    assert "Malaga" in hit.snippet
    assert not hit.snippet.startswith("Rafael Nadal is")
    assert len(hit.snippet) <= SNIPPET_MAX_CHARS


@pytest.mark.parametrize(
    "query",
    ['what is "jaguar', "jaguar AND (", "url:jaguar", "-jaguar", "jaguar^2 ~ * :", "(((", "!!!"],
)
def test_user_punctuation_is_not_query_syntax(corpus: Any, query: str) -> None:
    found = urls(query)  # no syntax error
    assert found[:1] == (["Jaguar"] if "jaguar" in query else [])


def test_no_index_yet_finds_nothing(settings: Any, tmp_path: Any) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    assert search_index().search("jaguar", 5) == []


def test_sync_replaces_changed_documents_and_drops_deleted_ones(corpus: Any) -> None:
    jaguar, cat = corpus[0], corpus[1]
    jaguar.body = "The jaguar is a British car maker, founded in Coventry."
    jaguar.save()
    cat.delete()

    search_index_sync(urls=[jaguar.url, cat.url])

    assert urls("Coventry") == ["Jaguar"]
    assert urls("rosettes") == []
    assert "Cat" not in urls("domesticated")
    assert search_index().count() == 3


def test_rebuild_command_rebuilds_from_the_database(settings: Any, tmp_path: Any) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    Document.objects.create(url="https://example.org/a", title="Aardvark", body="An aardvark digs burrows.")
    SearchIndex(tmp_path / "search").rebuild([])  # a stale, empty index
    assert urls("aardvark") == []

    call_command("rebuild_search_index")

    assert urls("aardvark") == ["a"]
    call_command("rebuild_search_index")  # twice: still one copy
    assert search_index().count() == 1


def test_stop_words_are_not_indexed(corpus: Any) -> None:
    """A stop word matches nearly every document: it is left out, so it neither slows nor skews."""
    assert urls("the of and") == []
    assert urls("the cat") == urls("cat")
