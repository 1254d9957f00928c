from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from annotation import consensus_export
from annotation.management import campaign_named


class Command(BaseCommand):
    help = (
        "Export a campaign's consensus labels: JSONL, one line per labelled item, or CSV, one row per "
        "item × attribute. Only complete items (all raters answered) have labels; the incomplete ones "
        "are left out and counted (on stderr when FILE is '-', which writes to stdout)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--campaign", required=True, help="The campaign's name.")
        parser.add_argument("--format", choices=consensus_export.EXPORT_FORMATS, default="jsonl")

    def handle(self, *args: Any, file: str, campaign: str, format: str, **options: Any) -> None:
        found = campaign_named(campaign)
        left_out = (
            f"{consensus_export.incomplete_count(campaign=found)} incomplete items left out "
            f"(fewer judgments than the campaign's {found.raters_per_item} raters per item: no labels yet)"
        )
        if file == "-":
            consensus_export.consensus_write(campaign=found, stream=self.stdout, format=format)
            self.stderr.write(left_out)
            return
        items = consensus_export.consensus_export_file(campaign=found, path=Path(file), format=format)
        exported = f"{file}: consensus labels of {items} items exported; {left_out}"
        self.stdout.write(self.style.SUCCESS(exported))
