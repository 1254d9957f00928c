from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from annotation.errors import AnnotationError, JudgmentImportError
from annotation.management import campaign_named
from annotation.services import judgment_imports
from groundwork.management.importing import ImportCommand


class Command(ImportCommand):
    help = (
        "Import judgments made elsewhere from a JSONL file, one per line: "
        '{"item": {"key", "context", "response"}, "rater", "attribute", "value"} '
        '(safety campaigns: "attribute": "violates" and "objective"). All or nothing: a bad line stops '
        "the import with its line and field, and nothing is written. The campaign's consensus is "
        "recomputed after the import."
    )
    source_help = "Where the judgments come from (default: the file name)."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--campaign", required=True, help="The campaign's name.")

    def import_file(
        self, *, path: Path, source: str | None, campaign: str, **options: Any
    ) -> judgment_imports.ImportResult:
        found = campaign_named(campaign)
        try:
            return judgment_imports.judgments_import_file(campaign=found, path=path, source=source)
        except JudgmentImportError:
            raise  # every bad line, printed by ImportCommand
        except AnnotationError as exc:  # the campaign refuses imports (its kind, its state)
            raise CommandError(str(exc)) from None

    def summary(self, result: judgment_imports.ImportResult, *, campaign: str, **options: Any) -> str:
        return (
            f"{result.ratings} ratings ({result.judgments} judgments) imported into {campaign!r}: "
            f"{result.items_created} new items, {result.raters_created} new raters; "
            f"{result.labelled} items labelled, {result.incomplete} incomplete "
            "(fewer judgments than the campaign's raters per item: no labels)"
        )
