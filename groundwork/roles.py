"""The three roles of the platform and the checks every page and API view makes.

A role is a Django group. What a role may do in the admin is the group's model permissions:
each app lists them in its AppConfig's ``role_grants``. A data migration of the app grants them
first, and ``sync_roles`` grants them again after every ``migrate`` (and every test-database
flush), so a model added later or a group deleted by hand is set right by the next migrate.
Pages and API views check the role (``role_required``, ``has_role``) or a model permission
(``ModelPermissions``). Superusers hold every role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from functools import cache, wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission, DjangoModelPermissions


class Role(StrEnum):
    CROWDWORKER = "crowdworker"
    ADMIN = "admin"
    RESEARCHER = "researcher"


# Admins and researchers work in /admin/, so their accounts are staff accounts.
STAFF_ROLES = frozenset({Role.ADMIN, Role.RESEARCHER})


def _roles_from_names(user: Any, names: Iterable[str]) -> frozenset[Role]:
    if user.is_superuser:
        return frozenset(Role)
    names = set(names)
    return frozenset(role for role in Role if role.value in names)


def user_roles(user: Any) -> frozenset[Role]:
    """The roles of ``user`` (every role for a superuser), cached on the user object."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_groundwork_roles", None)
    if cached is None:
        names = () if user.is_superuser else user.groups.values_list("name", flat=True)
        cached = _roles_from_names(user, names)
        user._groundwork_roles = cached
    return cached


def user_has_role(user: Any, *roles: Role) -> bool:
    return bool(user_roles(user) & set(roles))


def roles_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: ``roles`` is the set of role names of the user."""
    return {"roles": {role.value for role in user_roles(request.user)}}


def role_required(*roles: Role) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Page decorator: anonymous users go to the login page, other roles get 403."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        @login_required
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not user_has_role(request.user, *roles):
                names = " or ".join(role.value for role in roles)
                raise PermissionDenied(f"This page is for the {names} role.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def permission_required(perm: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Page decorator: anonymous users go to the login page, users without ``perm`` get 403."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        @login_required
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(perm):
                raise PermissionDenied("You do not have access to this page.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def has_role(*roles: Role) -> type[BasePermission]:
    """A DRF permission class that admits users holding one of ``roles``."""

    class HasRole(BasePermission):
        message = f"This endpoint is for the {' or '.join(r.value for r in roles)} role."

        def has_permission(self, request: Any, view: Any) -> bool:
            return user_has_role(request.user, *roles)

    HasRole.__name__ = "HasRole_" + "_".join(r.value for r in roles)
    return HasRole


def api_token_expired(created: datetime) -> bool:
    """Whether a token issued at ``created`` has outlived ``API_TOKEN_LIFETIME``."""
    return created + settings.API_TOKEN_LIFETIME <= timezone.now()


class RoleTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, with the user and their roles read in one hand-written query:
    every API call checks a role, and on the rating hot path building the ORM's query cost more
    CPU than running it (PostgreSQL; elsewhere the roles are read on first use, as for a session).
    A token past its lifetime is refused, from the ``created`` the same query reads."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if connection.vendor != "postgresql":
            user, token = super().authenticate_credentials(key)
            if api_token_expired(token.created):
                raise AuthenticationFailed("Token expired.")
            return user, token
        token_model = self.get_model()
        sql, user_fields = _token_query(token_model)
        with connection.cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise AuthenticationFailed("Invalid token.")
        *user_values, created, role_names = row
        user = token_model._meta.get_field("user").related_model.from_db(
            connection.alias, user_fields, user_values
        )
        if not user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        if api_token_expired(created):
            raise AuthenticationFailed("Token expired.")
        user._groundwork_roles = _roles_from_names(user, role_names)
        token = token_model.from_db(connection.alias, ("key", "user_id", "created"), (key, user.pk, created))
        token.user = user
        return user, token


@cache
def _token_query(token_model: Any) -> tuple[str, tuple[str, ...]]:
    """SELECT the token's user (every field), the token's creation and the user's group names."""
    user_model = token_model._meta.get_field("user").related_model
    groups = user_model._meta.get_field("groups")
    membership = groups.remote_field.through._meta
    fields = user_model._meta.concrete_fields
    columns = ", ".join(f"u.{connection.ops.quote_name(f.column)}" for f in fields)
    sql = f"""
        SELECT {columns}, t.created,
               coalesce(array_agg(g.name) FILTER (WHERE g.name IS NOT NULL), '{{}}')
        FROM {token_model._meta.db_table} t
        JOIN {user_model._meta.db_table} u ON u.id = t.user_id
        LEFT JOIN {membership.db_table} m ON m.{membership.get_field(groups.m2m_field_name()).column} = u.id
        LEFT JOIN {groups.related_model._meta.db_table} g
               ON g.id = m.{membership.get_field(groups.m2m_reverse_field_name()).column}
        WHERE t.key = %s
        GROUP BY u.id, t.key"""  # noqa: S608 - table and column names from the models; the key is a parameter
    return sql, tuple(f.attname for f in fields)


class ModelPermissions(DjangoModelPermissions):
    """Django model permissions, reads included: GET needs ``view_<model>``."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }


def grant_permissions(apps: Any, grants: dict[Role, Iterable[str]]) -> None:
    """Create the role groups and grant them ``app_label.codename`` permissions (idempotent).

    ``apps`` is a migration's historical registry or the real one. Permissions are normally
    created after all migrations (post_migrate); create them now so they can be granted.
    """
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        historical = getattr(app_config, "models_module", None) is None
        if historical:  # create_permissions skips apps without a models module
            app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        if historical:
            app_config.models_module = None

    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for role in Role:
        group_model.objects.get_or_create(name=role.value)
    for role, perms in grants.items():
        group = group_model.objects.get(name=role.value)
        for perm in perms:
            app_label, codename = perm.split(".")
            permission = permission_model.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            # A migration's state may not have a model added later: sync_roles grants it then.
            if permission is not None:
                group.permissions.add(permission)


def sync_roles(*, apps: Any = None, **kwargs: Any) -> None:
    """post_migrate: make sure every role group exists with every app's ``role_grants``.

    ``migrate`` passes its final state as ``apps`` (used for the tables); ``flush`` passes none.
    The grants are read from the real app configs: the state's stand-ins do not carry them.
    """
    from django.apps import apps as installed

    grants: dict[Role, list[str]] = {role: [] for role in Role}
    for app_config in installed.get_app_configs():
        for role, perms in getattr(app_config, "role_grants", {}).items():
            grants[role].extend(perms)
    grant_permissions(apps or installed, grants)
