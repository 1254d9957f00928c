"""Each host's search index follows the corpus by generation: before a search it re-indexes what
was written since its mark, so a write through any host (or while a host was away) reaches every
host's search. One process here, switching ``LOCAL_ARTIFACTS_DIR`` between two hosts' folders;
``test_multi_host.py`` runs the hosts as processes of their own."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from groundwork.roles import Role
from toolset import services
from toolset.models import Document, DocumentGeneration, DocumentRemoval
from toolset.records import DocumentRecord
from toolset.search import SearchIndex

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(settings: Any, tmp_path: Path) -> dict[str, Path]:
    settings.ARTIFACTS_DIR = tmp_path / "shared"
    return {name: tmp_path / name for name in ("a", "b")}


def on(settings: Any, host: Path) -> None:
    settings.LOCAL_ARTIFACTS_DIR = host


def titles(query: str, session: str) -> list[str]:
    """What a toolset search answers first on the current host (a fresh session: rank 1)."""
    return [r.title for r in services.toolset_query(session=session, query=query, tool="search")]


def load(*documents: tuple[str, str]) -> None:
    records = [
        DocumentRecord(url=f"https://example.org/{title.lower()}", title=title, body=body)
        for title, body in documents
    ]
    services.documents_import_records(records=records, source="test")


def test_a_write_through_any_host_reaches_every_hosts_search(settings: Any, hosts: dict[str, Path]) -> None:
    load(("Okapi", "The okapi lives in the rainforest of the Congo."), ("Quokka", "The quokka smiles."))
    for name, host in hosts.items():
        on(settings, host)
        assert titles("okapi rainforest", f"{name}-1") == ["Okapi"]

    load(("Okapi", "The okapi is related to the giraffe."))  # changed in place
    services.documents_delete(documents=Document.objects.filter(title="Quokka"))
    for name, host in hosts.items():
        on(settings, host)
        assert titles("okapi giraffe", f"{name}-2") == ["Okapi"]
        assert titles("rainforest", f"{name}-2") == []
        assert titles("quokka", f"{name}-2") == []
        assert services.search_index().count() == 1
    assert DocumentRemoval.objects.get().url == "https://example.org/quokka"

    load(("Quokka", "The quokka is back on Rottnest Island."))  # imported again after deletion
    assert not DocumentRemoval.objects.exists()
    on(settings, hosts["b"])
    assert titles("Rottnest", "b-3") == ["Quokka"]


def test_a_host_in_step_writes_nothing_and_a_behind_one_indexes_only_what_changed(
    settings: Any, hosts: dict[str, Path]
) -> None:
    load(("Okapi", "The okapi lives in the rainforest."), ("Quokka", "The quokka smiles."))
    on(settings, hosts["a"])
    assert services.search_index_sync() == 2  # no mark yet: rebuilt from the database
    assert services.search_index_sync() == 0  # in step: nothing to do

    load(("Quokka", "The quokka smiles at tourists."), ("Numbat", "The numbat eats termites."))
    generation = DocumentGeneration.objects.get()
    assert services.search_index().mark() == f"{generation.epoch}:{generation.value - 1}"
    assert services.search_index_sync() == 2  # the two written since, not the okapi
    assert services.search_index().mark() == f"{generation.epoch}:{generation.value}"
    assert services.search_index().count() == 3


def test_an_index_without_a_mark_of_another_epoch_or_ahead_is_rebuilt(
    settings: Any, hosts: dict[str, Path]
) -> None:
    load(("Okapi", "The okapi lives in the rainforest."))
    on(settings, hosts["a"])
    SearchIndex(hosts["a"] / "search").rebuild([])  # an index from before generations: no mark
    assert titles("okapi", "s1") == ["Okapi"]

    # The database emptied and filled again (a new epoch), the index still holding the old corpus.
    Document.objects.all().delete()
    DocumentGeneration.objects.all().delete()
    load(("Numbat", "The numbat eats termites."))
    assert titles("okapi", "s2") == []
    assert titles("numbat", "s2") == ["Numbat"]

    SearchIndex(hosts["a"] / "search").rebuild([])  # emptied by hand: the old mark is gone
    assert titles("numbat", "s2b") == ["Numbat"]

    # The database restored to an earlier generation than the index's mark.
    DocumentGeneration.objects.update(value=0)
    Document.objects.create(url="https://example.org/kiwi", title="Kiwi", body="The kiwi cannot fly.")
    assert titles("kiwi", "s3") == ["Kiwi"]


def test_a_search_does_not_wait_for_another_process_catching_up(
    settings: Any, hosts: dict[str, Path], monkeypatch: Any
) -> None:
    """A long catch-up (a big import) by another process of the host: the search answers from
    the index as it is after ``SEARCH_CATCH_UP_WAIT_S``, and catches up on a later search."""
    monkeypatch.setattr(services, "SEARCH_CATCH_UP_WAIT_S", 0.2)
    on(settings, hosts["a"])
    load(("Okapi", "The okapi lives in the rainforest."))
    assert titles("okapi", "s1") == ["Okapi"]
    load(("Numbat", "The numbat eats termites."))
    holding, release = threading.Event(), threading.Event()

    def catching_up() -> None:
        with services.search_index().locked():
            holding.set()
            release.wait(10)

    other = threading.Thread(target=catching_up)
    other.start()
    try:
        assert holding.wait(10)
        assert titles("numbat", "s1") == []  # answered without waiting
    finally:
        release.set()
        other.join()
    assert titles("numbat", "s2") == ["Numbat"]


def test_the_admins_edits_and_deletions_reach_every_host(
    settings: Any, hosts: dict[str, Path], users: Any, client: Any
) -> None:
    load(("Okapi", "The okapi lives in the rainforest."), ("Quokka", "The quokka smiles."))
    okapi, quokka = Document.objects.get(title="Okapi"), Document.objects.get(title="Quokka")
    client.force_login(users[Role.ADMIN])

    edited = {"title": "Okapi", "body": "The okapi is related to the giraffe.", "source": "test"}
    assert client.post(f"/admin/toolset/document/{okapi.pk}/change/", edited).status_code == 302
    assert client.post(f"/admin/toolset/document/{quokka.pk}/delete/", {"post": "yes"}).status_code == 302

    for name, host in hosts.items():
        on(settings, host)
        assert titles("giraffe", name) == ["Okapi"]
        assert titles("rainforest", name) == []
        assert titles("quokka", name) == []
