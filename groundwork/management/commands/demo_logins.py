from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from groundwork.accounts import demo_logins_ensure


class Command(BaseCommand):
    help = "Print the demo logins, one per role (creating the demo users if needed)."

    def handle(self, *args: Any, **options: Any) -> None:
        for login in demo_logins_ensure():
            self.stdout.write(f"  {login.role:<12} username {login.username:<12} password {login.password}")
