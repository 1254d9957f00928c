from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from annotation import selectors
from annotation.management import campaign_named
from annotation.services import consensus


class Command(BaseCommand):
    help = "Compute the consensus labels of a whole campaign now, in this process (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="The campaign's name.")

    def handle(self, *args: Any, campaign: str, **options: Any) -> None:
        found = campaign_named(campaign)
        labelled = consensus.campaign_aggregate(campaign=found)
        incomplete = selectors.campaigns_completeness(campaigns=[found])[found.pk].incomplete
        self.stdout.write(
            self.style.SUCCESS(
                f"campaign {found.name!r}: {labelled} items labelled; {incomplete} incomplete items "
                "(fewer judgments than raters) have no labels"
            )
        )
