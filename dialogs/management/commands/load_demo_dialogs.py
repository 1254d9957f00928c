from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dialogs import demo, services


class Command(BaseCommand):
    help = "Import the English conversations of chatterbot-corpus as pre-training dialogs (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = services.dialogs_import(records=demo.chatterbot_records(), source=demo.SOURCE)
        self.stdout.write(f"demo dialogs: {result.created} imported, {result.unchanged} already present")
