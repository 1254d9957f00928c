from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.errors import AnnotationError, JudgmentImportError
from annotation.management import campaign_named
from annotation.services import judgment_imports


class Command(BaseCommand):
    help = (
        "Import judgments made elsewhere from a JSONL file, one per line: "
        '{"item": {"key", "context", "response"}, "rater", "attribute", "value"} '
        '(safety campaigns: "attribute": "violates" and "objective"). All or nothing: a bad line stops '
        "the import with its line and field, and nothing is written. The campaign's consensus is "
        "recomputed after the import."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--campaign", required=True, help="The campaign's name.")
        parser.add_argument(
            "--source", default=None, help="Where the judgments come from (default: the file name)."
        )

    def handle(self, *args: Any, file: Path, campaign: str, source: str | None, **options: Any) -> None:
        found = campaign_named(campaign)
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            result = judgment_imports.judgments_import_file(campaign=found, path=file, source=source)
        except JudgmentImportError as exc:
            for error in exc.errors:
                self.stderr.write(f"{file}: {error}")
            raise CommandError(f"{file}: {len(exc.errors)} bad line(s); nothing was imported") from None
        except AnnotationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{file}: {result.ratings} ratings ({result.judgments} judgments) imported into "
                f"{found.name!r}: {result.items_created} new items, {result.raters_created} new raters; "
                f"{result.labelled} items labelled"
            )
        )
