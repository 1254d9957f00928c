from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from toolset import services


class Command(BaseCommand):
    help = (
        "Import search documents from a JSONL file in WikiExtractor's format, one per line: "
        '{"id", "url", "title", "text"}. All or nothing: a bad line stops the import with its line '
        "and field. A URL already present with the same content is left as it is; with other "
        "content it is updated. The search index follows in a task after commit."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--source", default=None, help="Source label (default: the file name).")

    def handle(self, *args: Any, file: Path, source: str | None, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            result = services.documents_import_file(path=file, source=source)
        except services.DocumentImportError as exc:
            for error in exc.errors:
                self.stderr.write(f"{file}:{error.line}: {error.field}: {error.message}")
            raise CommandError(f"{file}: {len(exc.errors)} bad line(s); nothing was imported") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{file}: {result.created} documents imported, {result.updated} updated, "
                f"{result.unchanged} unchanged"
            )
        )
