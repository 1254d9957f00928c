"""Builders shared by the annotation tests."""

from __future__ import annotations

from typing import Any

from annotation.models import Campaign
from annotation.services import campaigns
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
