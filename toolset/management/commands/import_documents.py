from __future__ import annotations

from pathlib import Path
from typing import Any

from groundwork.management.importing import ImportCommand
from toolset import services


class Command(ImportCommand):
    help = (
        "Import search documents from a JSONL file in WikiExtractor's format, one per line: "
        '{"id", "url", "title", "text"}. All or nothing: a bad line stops the import with its line '
        "and field. A URL already present with the same content is left as it is; with other "
        "content it is updated. The search index follows in a task after commit."
    )

    def import_file(self, *, path: Path, source: str | None, **options: Any) -> services.ImportResult:
        return services.documents_import_file(path=path, source=source)

    def summary(self, result: services.ImportResult, **options: Any) -> str:
        return f"{result.created} documents imported, {result.updated} updated, {result.unchanged} unchanged"
