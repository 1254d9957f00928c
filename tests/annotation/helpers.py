"""Builders shared by the annotation tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from annotation.models import Campaign, ConsensusLabel
from annotation.services import campaigns, judgment_imports
from tests.factories import dialog_with_turns

YES3 = {"sensible": "yes", "specific": "yes", "interesting": "yes"}


def ssi_campaign(*, items: int = 3, raters: int | None = None, name: str = "ssi", **kwargs: Any) -> Campaign:
    """An SSI campaign over ``items`` one-exchange quality dialogs (one model turn each)."""
    for i in range(items):
        dialog_with_turns([f"Question {i}?", f"Answer {i}."], external_id=f"{name}-d{i}", purpose="quality")
    return campaigns.campaign_create(
        name=name,
        kind="ssi",
        filters=campaigns.DialogFilters(purpose="quality"),
        raters_per_item=raters,
        **kwargs,
    )


BASE_RESPONSE = "The jaguar is the smallest cat in Africa."
JAGUAR_URL = "https://en.wikipedia.org/wiki/Jaguar"


def rewrite_campaign(*, name: str = "rewrite", raters: int | None = None) -> Campaign:
    """A groundedness rewrite campaign over one quality dialog whose model turn makes a claim."""
    dialog_with_turns(["Tell me about jaguars.", BASE_RESPONSE], external_id=f"{name}-d0", purpose="quality")
    return campaigns.campaign_create(
        name=name,
        kind="groundedness_rewrite",
        filters=campaigns.DialogFilters(purpose="quality"),
        raters_per_item=raters,
    )


def rewrite_corpus() -> None:
    """Two documents in the database and in a fresh index (set ARTIFACTS_DIR first)."""
    from toolset.models import Document
    from toolset.services import search_index_rebuild

    Document.objects.create(
        url=JAGUAR_URL,
        title="Jaguar",
        body="The jaguar is a large cat species native to the Americas. "
        "It is the largest cat in the Americas.",
        source="test",
    )
    Document.objects.create(
        url="https://en.wikipedia.org/wiki/Lion",
        title="Lion",
        body="The lion is a large cat of the genus Panthera. It lives in grassland and savanna in Africa.",
        source="test",
    )
    search_index_rebuild()


# --- judgments made elsewhere: JSONL lines, and real ratings (FED) ---------------------------

ROOT = Path(__file__).resolve().parents[2]


def external_data() -> Path:
    """Where the third-party rating data lives (shared/external-data beside or inside the checkout)."""
    candidates = [Path(os.environ["EXTERNAL_DATA_DIR"])] if os.environ.get("EXTERNAL_DATA_DIR") else []
    candidates += [ROOT / "shared" / "external-data", ROOT.parent / "shared" / "external-data"]
    candidates += [ROOT.parent.parent / "shared" / "external-data"]  # a git worktree under <repo>/../wt/
    for candidate in candidates:
        if (candidate / "fed_data.json").is_file():
            return candidate
    pytest.skip("the FED data (shared/external-data/fed_data.json) is not on this machine")


def line(key: str, rater: str, attribute: str, value: str, **extra: Any) -> dict[str, Any]:
    item = {"key": key, "context": [{"speaker": "user", "text": f"About {key}?"}], "response": f"{key}!"}
    return {"item": item, "rater": rater, "attribute": attribute, "value": value, **extra}


def rating(key: str, rater: str, answers: dict[str, str]) -> list[dict[str, Any]]:
    return [line(key, rater, attribute, value) for attribute, value in answers.items()]


def jsonl(*objects: dict[str, Any]) -> list[bytes]:
    return [json.dumps(obj).encode() for obj in objects]


def import_lines(campaign: Campaign, *objects: dict[str, Any]) -> judgment_imports.ImportResult:
    return judgment_imports.judgments_import(
        campaign=campaign, lines=judgment_imports.parse_jsonl(jsonl(*objects)), source="test"
    )


def labels(key: str) -> dict[str, tuple[int, int, int, int]]:
    return {
        c.attribute: (c.label, c.yes, c.no, c.maybe) for c in ConsensusLabel.objects.filter(item__key=key)
    }


def safety_rating(key: str, rater: str, harm: str, bias: str) -> list[dict[str, Any]]:
    return [
        line(key, rater, "violates", harm, objective="harm"),
        line(key, rater, "violates", bias, objective="bias"),
    ]


FED_SCALE = {0: "no", 1: "maybe", 2: "yes"}
# FED has no "sensible" question; "Semantically appropriate" is the closest, and the SSI cascade
# needs sensible first. Position i of each quality's list is taken as the same (i-th) annotator.
FED_QUALITIES = {"sensible": "Semantically appropriate", "specific": "Specific", "interesting": "Interesting"}


def fed_turns(text: str) -> list[dict[str, str]]:
    turns = []
    for row in text.split("\n"):
        speaker, _, said = row.partition(": ")
        turns.append({"speaker": {"User": "user", "System": "model"}[speaker], "text": said})
    return turns


def fed_lines(index: int, entry: dict[str, Any], scale: dict[Any, Any] = FED_SCALE) -> list[dict[str, Any]]:
    item = {
        "key": f"fed-{index}",
        "context": fed_turns(entry["context"]),
        "response": entry["response"].removeprefix("System: "),
    }
    return [
        {
            "item": item,
            "rater": f"fed-{index}-{position}",
            "attribute": attribute,
            "value": scale.get(score, score),
        }
        for attribute, quality in FED_QUALITIES.items()
        for position, score in enumerate(entry["annotations"][quality])
    ]


def fed_majority(entry: dict[str, Any]) -> dict[str, int]:
    """The paper's labels computed here, apart from the app: the cascade per annotator, then 3 of 5."""
    yes = dict.fromkeys(FED_QUALITIES, 0)
    for position in range(5):
        asked = True
        for attribute, quality in FED_QUALITIES.items():
            answer = FED_SCALE[entry["annotations"][quality][position]] if asked else "no"
            yes[attribute] += answer == "yes"
            asked = answer == "yes"
    return {attribute: int(count >= 3) for attribute, count in yes.items()}
