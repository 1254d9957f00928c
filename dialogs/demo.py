"""Demo dialogs: the English conversations of the PyPI package ``chatterbot-corpus``."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import yaml

from dialogs.records import DialogRecord, TurnRecord

SOURCE = "chatterbot-corpus"


def chatterbot_records(language: str = "english") -> Iterator[DialogRecord]:
    """One pre-training dialog per conversation; speakers alternate, the user first."""
    data = resources.files("chatterbot_corpus") / "data" / language
    for path in sorted(data.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".yml"):
            continue
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        stem = path.name.removesuffix(".yml")
        for number, conversation in enumerate(document.get("conversations") or [], start=1):
            texts = [str(utterance) for utterance in conversation if str(utterance).strip()]
            if len(texts) < 2:
                continue
            yield DialogRecord(
                id=f"{SOURCE}:{language}:{stem}:{number}",
                purpose="pretrain",
                turns=tuple(
                    TurnRecord(speaker="user" if i % 2 == 0 else "model", text=text)
                    for i, text in enumerate(texts)
                ),
                meta={"source": SOURCE, "categories": document.get("categories") or [stem]},
            )
