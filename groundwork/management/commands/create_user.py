from __future__ import annotations

import getpass
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from groundwork.accounts import user_set_role
from groundwork.roles import Role


class Command(BaseCommand):
    help = (
        "Create a user with one role (crowdworker, admin, researcher), or change an existing user's role. "
        "The password comes from --password-env VAR, or is asked for."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[r.value for r in Role])
        parser.add_argument(
            "--password-env", metavar="VAR", help="Read the password from this environment variable."
        )

    def handle(self, *args: Any, username: str, role: str, password_env: str | None, **options: Any) -> None:
        if password_env:
            password = os.environ.get(password_env)
            if not password:
                raise CommandError(f"environment variable {password_env} is not set or empty")
        elif options.get("interactive", True) and os.isatty(0):
            password = getpass.getpass(f"Password for {username}: ")
        else:
            password = None
        user_set_role(username=username, role=Role(role), password=password)
        self.stdout.write(self.style.SUCCESS(f"{username}: role {role}"))
