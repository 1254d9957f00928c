"""What the JSONL import commands share (``import_dialogs``, ``import_documents``,
``import_judgments``): a file argument and ``--source``, a missing file refused, every bad line
printed as ``file:line: field: message`` (as a compiler does, so editors jump to it) and nothing
imported, then one line saying what was imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from groundwork.jsonl import ImportRefused


class ImportCommand(BaseCommand):
    """A command that imports one JSONL file through a service, all or nothing."""

    source_help = "Source label (default: the file name)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--source", default=None, help=self.source_help)

    def import_file(self, *, path: Path, source: str | None, **options: Any) -> Any:
        """Call the import service; return its result (refusals raise ``ImportRefused``)."""
        raise NotImplementedError

    def summary(self, result: Any, **options: Any) -> str:
        """What was imported, in one line (after the file name)."""
        raise NotImplementedError

    def handle(self, *args: Any, file: Path, source: str | None, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            result = self.import_file(path=file, source=source, **options)
        except ImportRefused as exc:
            for error in exc.errors:
                self.stderr.write(f"{file}:{error.line}: {error.field}: {error.message}")
            raise CommandError(f"{file}: {len(exc.errors)} bad line(s); nothing was imported") from None
        self.stdout.write(self.style.SUCCESS(f"{file}: {self.summary(result, **options)}"))
