"""Fixtures of the annotation tests: empty campaigns to import judgments into."""

from __future__ import annotations

import pytest

from annotation.models import Campaign
from annotation.services import campaigns


@pytest.fixture
def ssi() -> Campaign:
    return campaigns.campaign_create(name="external ssi", kind="ssi", empty=True)


@pytest.fixture
def safety() -> Campaign:
    return campaigns.campaign_create(
        name="external safety", kind="safety", empty=True, objectives=["harm", "bias"]
    )
