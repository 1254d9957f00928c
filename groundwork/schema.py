"""The OpenAPI schema (drf-spectacular): every operation also documents the errors DRF answers
for it before the view runs, so the schema and the server agree (``tests/groundwork/test_schemathesis.py``
checks every response against it).

A view's ``@extend_schema(responses=...)`` names its own statuses; this adds the ones that come
from the framework: 400 for a body that does not parse, 401 without valid credentials, 403 for a
role that may not, 404 for an id that names nothing (or a page past the last), 413 for a body
over its cap, 415 for a body of another media type, 429 when throttled, and 503 for a POST that
queues work (a view with ``queues_work = True``) while the broker is down. An error status a
view declares without a body gets the body our errors have.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers


class ErrorSerializer(serializers.Serializer):
    """What every API error answers: `{"detail": "..."}`."""

    detail = serializers.CharField(help_text="What is wrong, in words.")


VALIDATION_ERROR = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description=(
        "The request is refused: each key names a field (or `detail`, or `non_field_errors`) and "
        "says what is wrong with it."
    ),
)
ERRORS = {
    "400": VALIDATION_ERROR,
    "401": OpenApiResponse(ErrorSerializer, description="No credentials, or they are not valid."),
    "403": OpenApiResponse(ErrorSerializer, description="Your role may not do this."),
    "404": OpenApiResponse(ErrorSerializer, description="There is no such object (or page)."),
    "409": OpenApiResponse(ErrorSerializer, description="The object is not in a state that allows this."),
    "413": OpenApiResponse(ErrorSerializer, description="The body is larger than this endpoint takes."),
    "415": OpenApiResponse(ErrorSerializer, description="The body is of a media type not accepted here."),
    "429": OpenApiResponse(ErrorSerializer, description="Too many requests: try again later."),
    "503": OpenApiResponse(
        ErrorSerializer,
        description="The task queue is down: the work was not queued and nothing was kept; try again.",
    ),
}
BODY_METHODS = {"POST", "PUT", "PATCH"}  # whose body DRF parses, when the view reads it
NO_BODY = "No response body"  # what drf-spectacular writes for a status declared as None


class AutoSchema(openapi.AutoSchema):
    def _framework_errors(self) -> list[str]:
        """The error statuses DRF itself can answer for this operation."""
        codes = []
        if self.method in BODY_METHODS and self.get_request_serializer() is not None:
            codes += ["400", "413", "415"]
        allowed = [p.__class__ for p in self.view.get_permissions()]
        if permissions.AllowAny not in allowed:
            codes += ["401", "403"]
        if "{" in self.path or (self._is_list_view() and self._get_paginator()):
            codes.append("404")
        if self.view.get_throttles():
            codes.append("429")
        if self.method == "POST" and getattr(self.view, "queues_work", False):
            codes.append("503")
        return codes

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code, response in list(responses.items()):
            if code in ERRORS and "content" not in response:
                default = ERRORS[code]
                description = response.get("description")
                if not description or description == NO_BODY:
                    description = default.description
                described = OpenApiResponse(default.response, description=description)
                responses[code] = self._get_response_for_code(described, code, direction=direction)
        for code in self._framework_errors():
            if code not in responses:
                responses[code] = self._get_response_for_code(ERRORS[code], code, direction=direction)
        return dict(sorted(responses.items()))
