"""Builders shared by the annotation tests."""

from __future__ import annotations

from typing import Any

from annotation import services
from annotation.models import Campaign
from tests.factories import dialog_with_turns

YES3 = {"sensible": "yes", "specific": "yes", "interesting": "yes"}


def ssi_campaign(*, items: int = 3, raters: int | None = None, name: str = "ssi", **kwargs: Any) -> Campaign:
    """An SSI campaign over ``items`` one-exchange quality dialogs (one model turn each)."""
    for i in range(items):
        dialog_with_turns([f"Question {i}?", f"Answer {i}."], external_id=f"{name}-d{i}", purpose="quality")
    return services.campaign_create(
        name=name,
        kind="ssi",
        filters=services.DialogFilters(purpose="quality"),
        raters_per_item=raters,
        **kwargs,
    )
