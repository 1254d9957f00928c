from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dialogs import services
from dialogs.models import Dialog


class Command(BaseCommand):
    help = "Export dialogs to a JSONL file (the import format), one dialog per line. '-' writes to stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--purpose", choices=Dialog.Purpose.values, default="")

    def handle(self, *args: Any, file: str, purpose: str, **options: Any) -> None:
        if file == "-":
            dialogs = Dialog.objects.filter(purpose=purpose) if purpose else Dialog.objects.all()
            services.dialogs_write_jsonl(dialogs=dialogs, stream=self.stdout)
            return
        count = services.dialogs_export_file(path=Path(file), purpose=purpose)
        self.stdout.write(self.style.SUCCESS(f"{file}: {count} dialogs exported"))
