from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from groundwork.accounts import demo_logins_ensure

# Each app loads its own demo data; called by name so that this package imports no app. The demo
# evaluation set comes right after the dialogs: its dialogs are held out of every training dataset.
DEMO_COMMANDS = [
    "load_demo_dialogs",
    "load_demo_evaluation_set",
    "load_demo_campaigns",
    "load_demo_documents",
]


class Command(BaseCommand):
    help = "Load the demo data of every app and create one demo user per role (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        for name in DEMO_COMMANDS:
            call_command(name, stdout=self.stdout, stderr=self.stderr)
        logins = demo_logins_ensure()
        self.stdout.write(f"demo users: {', '.join(login.username for login in logins)}")
