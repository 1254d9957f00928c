from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from annotation.models import Campaign
from annotation.services import campaigns

# name, kind: campaigns over the demo (pre-training) dialogs, so /work/ has work.
DEMO_CAMPAIGNS = [
    ("Demo: quality (SSI)", Campaign.Kind.SSI),
    ("Demo: safety", Campaign.Kind.SAFETY),
    ("Demo: grounded rewrite", Campaign.Kind.GROUNDEDNESS_REWRITE),
]


class Command(BaseCommand):
    help = "Create the demo rating campaigns over the demo dialogs (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        for name, kind in DEMO_CAMPAIGNS:
            if Campaign.objects.filter(name=name).exists():
                self.stdout.write(f"demo campaign {name!r}: already present")
                continue
            campaign = campaigns.campaign_create(
                name=name, kind=kind, filters=campaigns.DialogFilters(purpose="pretrain")
            )
            self.stdout.write(f"demo campaign {name!r}: {campaign.items.count()} items")
