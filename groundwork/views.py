"""Platform pages and endpoints that belong to no app: the role-aware home and API tokens."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from groundwork.accounts import api_token_for
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
    """Exchange a username and password for an API token (``Authorization: Token <key>``).

    Failed attempts count towards the same lockout as the login page (django-axes).
    """

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"

    @extend_schema(
        request=TokenRequestSerializer,
        responses={200: inline_serializer("Token", {"token": serializers.CharField()}), 400: None, 429: None},
        auth=[],
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


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """What django-axes answers a locked-out client: JSON for the API, a page for people."""
    minutes = max(1, int(settings.AXES_COOLOFF_TIME.total_seconds() // 60))
    message = f"Too many failed logins for this account; try again in {minutes} minutes."
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=429)
    return render(request, "registration/locked_out.html", {"message": message}, status=429)
