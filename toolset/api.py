"""REST API of the toolset: one query endpoint for crowdworkers' browsers and outside clients."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from toolset import services
from toolset.models import QUERY_MAX_CHARS, SESSION_MAX_CHARS, Tool


class ToolsetQuerySerializer(serializers.Serializer):
    query = serializers.CharField(max_length=QUERY_MAX_CHARS)
    session = serializers.CharField(max_length=SESSION_MAX_CHARS)
    tool = serializers.ChoiceField(choices=Tool.choices, required=False)


class ToolResultSerializer(serializers.Serializer):
    tool = serializers.ChoiceField(choices=Tool.choices)
    rank = serializers.IntegerField()
    title = serializers.CharField(allow_blank=True)
    url = serializers.CharField(allow_blank=True)
    snippet = serializers.CharField()


class ToolsetResultsSerializer(serializers.Serializer):
    results = ToolResultSerializer(many=True)


class ToolsetQueryView(APIView):
    """Ask the toolset (METHOD.md §5): without ``tool`` every tool runs, and the results come in
    the order calculator, translator, search. Repeating a query in the same session returns the
    next-ranked search result. Every call is logged with the user and session."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "toolset"

    @extend_schema(request=ToolsetQuerySerializer, responses={200: ToolsetResultsSerializer})
    def post(self, request: Request) -> Response:
        serializer = ToolsetQuerySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            results = services.toolset_query(
                session=data["session"], query=data["query"], tool=data.get("tool"), actor_user=request.user
            )
        except services.ToolsetQueryError as exc:
            return Response({exc.field: [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(ToolsetResultsSerializer({"results": results}).data)
