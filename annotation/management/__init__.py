"""Management commands of the annotation app, and what they share."""

from __future__ import annotations

from django.core.management.base import CommandError

from annotation.models import Campaign


def campaign_named(name: str) -> Campaign:
    """The campaign called ``name``, or a ``CommandError`` saying there is none."""
    campaign = Campaign.objects.filter(name=name).first()
    if campaign is None:
        raise CommandError(f"There is no campaign named {name!r}.")
    return campaign
