from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from dialogs import evaluation_sets
from groundwork.management.importing import ImportCommand


class Command(ImportCommand):
    help = (
        "Import an evaluation set from a JSONL file, one context per line: "
        '{"id", "context": [{"speaker", "text"}], "purpose": quality|safety|groundedness|role, '
        '"role"?, "reference"?}. All or nothing: a bad line stops the import with its line and field. '
        "A name already in use gets its next version; contexts identical to its latest version make none."
    )
    source_help = "Source label of the set (default: the file name)."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--name", default=None, help="The set's name (default: the file's stem).")
        parser.add_argument("--description", default="", help="What the set tests, for readers of reports.")

    def import_file(
        self, *, path: Path, source: str | None, **options: Any
    ) -> evaluation_sets.EvaluationSetImport:
        try:
            return evaluation_sets.evaluation_set_import_file(
                path=path, name=options["name"], description=options["description"], source=source
            )
        except evaluation_sets.EvaluationSetError as exc:
            raise CommandError(f"{path}: {exc.message}") from None

    def summary(self, result: evaluation_sets.EvaluationSetImport, **options: Any) -> str:
        evaluation_set = result.evaluation_set
        if not result.created:
            return (
                f"the same {evaluation_set.context_count} contexts as {evaluation_set}; no new version made"
            )
        return f"{evaluation_set.context_count} contexts imported as {evaluation_set}"
