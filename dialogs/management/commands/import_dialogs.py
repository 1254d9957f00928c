from __future__ import annotations

from pathlib import Path
from typing import Any

from dialogs import services
from groundwork.management.importing import ImportCommand


class Command(ImportCommand):
    help = (
        "Import dialogs from a JSONL file, one dialog per line: "
        '{"id", "purpose", "turns": [{"speaker", "text"}], "meta"}. '
        "All or nothing: a bad line stops the import with its line and field, and nothing is written. "
        "Ids already present with the same content are left as they are."
    )
    source_help = "Source label of the dialogs (default: the file name)."

    def import_file(self, *, path: Path, source: str | None, **options: Any) -> services.ImportResult:
        return services.dialogs_import_file(path=path, source=source)

    def summary(self, result: services.ImportResult, **options: Any) -> str:
        return f"{result.created} dialogs imported, {result.unchanged} already present"
