from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from toolset import services


class Command(BaseCommand):
    help = "Rebuild this host's search index (LOCAL_ARTIFACTS_DIR/search) from the documents in the database."

    def handle(self, *args: Any, **options: Any) -> None:
        count = services.search_index_rebuild()
        self.stdout.write(self.style.SUCCESS(f"search index rebuilt: {count} documents"))
