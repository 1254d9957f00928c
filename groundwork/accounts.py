"""User accounts and their roles; the demo logins that `make run` prints."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractUser, Group, User
from django.db import transaction

from groundwork.files import private_file_write
from groundwork.roles import STAFF_ROLES, Role, api_token_expired


@dataclass(frozen=True)
class Login:
    role: str
    username: str
    password: str


@transaction.atomic
def user_set_role(*, username: str, role: Role, password: str | None = None) -> AbstractUser:
    """Create or update ``username`` so that it holds exactly ``role``.

    Admins and researchers work in /admin/, so they are staff; crowdworkers are not.
    The password is set when given (and only changed when it differs).
    """
    user, _ = User.objects.get_or_create(username=username)
    user.is_staff = role in STAFF_ROLES
    if password is not None and not user.check_password(password):
        user.set_password(password)
    user.save()
    user.groups.set([Group.objects.get(name=role.value)])
    return user


def demo_logins_ensure() -> list[Login]:
    """One demo user per role, named after the role, with a password generated on first use.

    The passwords are kept in ``ARTIFACTS_DIR/demo-logins.json`` (never in the repository), so
    every run prints the same logins. Idempotent.
    """
    path = settings.ARTIFACTS_DIR / "demo-logins.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    logins = [
        Login(
            role=role.value, username=role.value, password=stored.get(role.value) or secrets.token_urlsafe(9)
        )
        for role in Role
    ]
    for login in logins:
        user_set_role(username=login.username, role=Role(login.role), password=login.password)
    private_file_write(path, json.dumps({login.role: login.password for login in logins}, indent=2))
    return logins


@transaction.atomic
def api_token_for(*, user: AbstractUser) -> str:
    """The user's API token: the live one, else a new one (on first use, after expiry)."""
    from rest_framework.authtoken.models import Token

    token, _ = Token.objects.get_or_create(user=user)
    if api_token_expired(token.created):
        Token.objects.filter(key=token.key).delete()
        token, _ = Token.objects.get_or_create(user=user)
    return token.key


@transaction.atomic
def api_token_revoke(*, user: AbstractUser) -> None:
    """Revoke the user's API token: it is refused from now on (idempotent)."""
    from rest_framework.authtoken.models import Token

    Token.objects.filter(user=user).delete()
