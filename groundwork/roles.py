"""The three roles of the platform and the checks every page and API view makes.

A role is a Django group. What a role may do in the admin is the group's model permissions,
granted by each app's data migration (``grant_permissions``); pages and API views check the
role (``role_required``, ``HasRole``) or a model permission (``ModelPermissions``). Superusers
hold every role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import BasePermission, DjangoModelPermissions


class Role(StrEnum):
    CROWDWORKER = "crowdworker"
    ADMIN = "admin"
    RESEARCHER = "researcher"


# Admins and researchers work in /admin/, so their accounts are staff accounts.
STAFF_ROLES = frozenset({Role.ADMIN, Role.RESEARCHER})


def user_roles(user: Any) -> frozenset[Role]:
    """The roles of ``user`` (every role for a superuser), cached on the user object."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_groundwork_roles", None)
    if cached is None:
        if user.is_superuser:
            cached = frozenset(Role)
        else:
            names = set(user.groups.values_list("name", flat=True))
            cached = frozenset(role for role in Role if role.value in names)
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


class ModelPermissions(DjangoModelPermissions):
    """Django model permissions, reads included: GET needs ``view_<model>``."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }


def grant_permissions(apps: Any, grants: dict[Role, Iterable[str]]) -> None:
    """Data-migration helper: create the role groups and grant ``app_label.codename`` perms.

    Permissions are normally created after all migrations (post_migrate); create them now so
    that a migration can hand them to groups.
    """
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for role in Role:
        group_model.objects.get_or_create(name=role.value)
    for role, perms in grants.items():
        group = group_model.objects.get(name=role.value)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(
                permission_model.objects.get(content_type__app_label=app_label, codename=codename)
            )
