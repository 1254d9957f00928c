"""Platform pages and endpoints that belong to no app: the role-aware home and API tokens."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views import defaults
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.views import APIView

from groundwork.accounts import api_token_for, api_token_revoke
from groundwork.roles import STAFF_ROLES, Role, user_has_role


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send each role to its place: crowdworkers to /work/, admins and researchers to /admin/."""
    if user_has_role(request.user, Role.CROWDWORKER) and not request.user.is_superuser:
        return redirect("work")
    if user_has_role(request.user, *STAFF_ROLES):
        return redirect("admin:index")
    return redirect("work")  # no role yet: /work/ explains that


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})


class ObtainTokenView(APIView):
    """Exchange a username and password for an API token (``Authorization: Token <key>``), or
    revoke it.

    Failed attempts count towards the same lockout as the login page (django-axes).
    """

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"

    def get_authenticators(self) -> list[Any]:
        # POST reads no credentials but the posted ones: a client still sending its expired token
        # along must be able to get a fresh one. DELETE revokes the token of whoever sends it.
        if self._revoking():
            return [auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
        return []

    def get_permissions(self) -> list[BasePermission]:
        return [IsAuthenticated() if self._revoking() else AllowAny()]

    def _revoking(self) -> bool:
        # drf-spectacular asks before it gives the view a request.
        return getattr(self.request, "method", None) == "DELETE"

    @extend_schema(
        request=TokenRequestSerializer,
        responses={200: inline_serializer("Token", {"token": serializers.CharField()}), 400: None, 429: None},
        auth=[],
        description="A token for these credentials: the one issued before while it lives, "
        "else a new one. A token expires API_TOKEN_LIFETIME_HOURS after it was issued.",
    )
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # On the Django request, so that django-axes counts failures and its middleware
        # answers a locked-out client with ``lockout_response``.
        user = authenticate(request._request, **serializer.validated_data)
        if user is None or not user.is_active:
            return Response(
                {"detail": "Unable to log in with these credentials."}, status=status.HTTP_400_BAD_REQUEST
            )
        return Response({"token": api_token_for(user=user)})

    @extend_schema(
        request=None,
        responses={204: None, 401: None},
        description="Revoke the caller's API token; it is refused from now on.",
    )
    def delete(self, request: Request) -> Response:
        api_token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address, as DRF's throttles find it (``TRUSTED_PROXIES``, DRF's
    ``NUM_PROXIES``): REMOTE_ADDR, or behind proxies the address the outermost one appended to
    X-Forwarded-For. django-axes locks out by it (``AXES_CLIENT_IP_CALLABLE``).

    Not an address (a proxy passing on a client's garbage) counts as REMOTE_ADDR.
    """
    ident = BaseThrottle().get_ident(request)
    try:
        return str(ipaddress.ip_address(ident))
    except ValueError:
        return request.META.get("REMOTE_ADDR")


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """What django-axes answers a locked-out client: JSON for the API, a page for people."""
    minutes = max(1, int(settings.AXES_COOLOFF_TIME.total_seconds() // 60))
    message = f"Too many failed logins for this account; try again in {minutes} minutes."
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=429)
    return render(request, "registration/locked_out.html", {"message": message}, status=429)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 for an address nothing answers (``handler404``): JSON under /api/, like every API
    error, and the page for people elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
