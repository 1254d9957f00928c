"""Demo dialogs: the English conversations of the PyPI package ``chatterbot-corpus``; and the
demo evaluation set, cut from a sample of them (held out of training)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from importlib import resources

import yaml
from django.db.models import Count, Q

from dialogs.models import Dialog, Speaker
from dialogs.records import DialogRecord, TurnRecord

SOURCE = "chatterbot-corpus"
EVALUATION_SET = "demo"
EVALUATION_CONTEXTS = 40  # about: whole dialogs are taken until there are this many


def chatterbot_records(language: str = "english") -> Iterator[DialogRecord]:
    """One pre-training dialog per distinct conversation; speakers alternate, the user first.

    The corpus repeats conversations within a file: ``tech_support.yml`` holds 10 conversations
    105 times each, and 86 of ``coding.yml``'s 184 are repeats (2,026 conversations, 899
    distinct). A repeat is skipped (its first occurrence keeps its id): imported, the copies made
    half of every dialog dataset, weighed those 10 conversations a hundredfold in training, and,
    the split being by dialog, put copies of training turns in the validation split."""
    data = resources.files("chatterbot_corpus") / "data" / language
    seen: set[tuple[str, ...]] = set()
    for path in sorted(data.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".yml"):
            continue
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        stem = path.name.removesuffix(".yml")
        for number, conversation in enumerate(document.get("conversations") or [], start=1):
            texts = [str(utterance) for utterance in conversation if str(utterance).strip()]
            if len(texts) < 2 or tuple(texts) in seen:
                continue
            seen.add(tuple(texts))
            yield DialogRecord(
                id=f"{SOURCE}:{language}:{stem}:{number}",
                purpose="pretrain",
                turns=tuple(
                    TurnRecord(speaker="user" if i % 2 == 0 else "model", text=text)
                    for i, text in enumerate(texts)
                ),
                meta={"source": SOURCE, "categories": document.get("categories") or [stem]},
            )


def evaluation_sample(contexts: int = EVALUATION_CONTEXTS) -> list[Dialog]:
    """The demo dialogs the demo evaluation set is cut from: in the order of the sha256 of their
    ids (a fixed, spread-out sample), whole dialogs until they give ``contexts`` contexts (a model
    turn after the user's first turn: every model turn of these alternating dialogs)."""
    dialogs = Dialog.objects.filter(source=SOURCE).annotate(
        answers=Count("turns", filter=Q(turns__speaker=Speaker.MODEL, turns__index__gt=0))
    )
    ordered = sorted(
        (d for d in dialogs.only("pk", "external_id") if d.answers),
        key=lambda d: hashlib.sha256(d.external_id.encode()).hexdigest(),
    )
    chosen, total = [], 0
    for dialog in ordered:
        if total >= contexts:
            break
        chosen.append(dialog)
        total += dialog.answers
    return chosen
