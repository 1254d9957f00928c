from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dialogs import services


class Command(BaseCommand):
    help = (
        "Import dialogs from a JSONL file, one dialog per line: "
        '{"id", "purpose", "turns": [{"speaker", "text"}], "meta"}. '
        "All or nothing: a bad line stops the import with its line and field, and nothing is written. "
        "Ids already present with the same content are left as they are."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--source", default=None, help="Source label of the dialogs (default: the file name)."
        )

    def handle(self, *args: Any, file: Path, source: str | None, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            result = services.dialogs_import_file(path=file, source=source)
        except services.DialogImportError as exc:
            for error in exc.errors:
                self.stderr.write(f"{file}:{error.line}: {error.field}: {error.message}")
            raise CommandError(f"{file}: {len(exc.errors)} bad line(s); nothing was imported") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{file}: {result.created} dialogs imported, {result.unchanged} already present"
            )
        )
