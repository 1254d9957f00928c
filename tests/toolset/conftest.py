from __future__ import annotations

from typing import Any

import pytest

from toolset.models import Document
from toolset.services import search_index_rebuild

# A small corpus: "jaguar" is rare (one document), "cat" is common (every document).
CORPUS = [
    (
        "https://en.wikipedia.org/wiki/Jaguar",
        "Jaguar",
        "The jaguar is a large cat species native to the Americas. It is the largest cat in the "
        "Americas. Its coat is tawny with dark rosettes. The jaguar hunts caimans, deer and "
        "capybaras along rivers, and it swims well.",
    ),
    (
        "https://en.wikipedia.org/wiki/Cat",
        "Cat",
        "The cat is a small domesticated carnivorous mammal. A cat sleeps most of the day. Cats "
        "are kept as pets in many homes. The cat is valued for its company and for hunting mice.",
    ),
    (
        "https://en.wikipedia.org/wiki/Lion",
        "Lion",
        "The lion is a large cat of the genus Panthera. It lives in grassland and savanna in "
        "Africa. Lions hunt in groups called prides.",
    ),
    (
        "https://en.wikipedia.org/wiki/Rafael_Nadal",
        "Rafael Nadal",
        "Rafael Nadal is a Spanish former professional tennis player. He was born on 3 June 1986 in "
        "Manacor, Mallorca. "
        + "He won many titles over a long career on clay courts. "
        * 12
        + "Nadal retired from professional tennis in November 2024 after the Davis Cup finals in "
        "Malaga, ending a career of twenty-two Grand Slam titles.",
    ),
]


@pytest.fixture
def corpus(db: None, settings: Any, tmp_path: Any) -> list[Document]:
    """The fixture corpus in the database and in a fresh index under ``tmp_path``."""
    settings.ARTIFACTS_DIR = tmp_path
    documents = [Document.objects.create(url=u, title=t, body=b, source="test") for u, t, b in CORPUS]
    search_index_rebuild()
    return documents
