"""REST API of the toolset: the query endpoint for crowdworkers' browsers and outside clients, and
the import of search documents."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from groundwork.parsers import IMPORT_PARSERS, body_records
from groundwork.roles import Role, has_role
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
    next-ranked search result (counted per user). Every call is logged with the user and session.
    A session that belongs to someone's work (``assignment-<id>``, a rewrite's research) takes
    only its worker's queries: 403 for anyone else."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "toolset"

    @extend_schema(
        request=ToolsetQuerySerializer,
        responses={
            200: ToolsetResultsSerializer,
            400: OpenApiTypes.OBJECT,
            403: OpenApiResponse(description="The session belongs to another user's work."),
            404: OpenApiResponse(description="The session names an assignment that does not exist."),
            409: OpenApiResponse(description="The session's assignment is not held any more."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = ToolsetQuerySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        results = services.toolset_query(
            session=data["session"], query=data["query"], tool=data.get("tool"), actor_user=request.user
        )
        return Response(ToolsetResultsSerializer({"results": results}).data)


DocumentImportResultSerializer = inline_serializer(
    "DocumentImportResult",
    {
        "created": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(),
    },
)


class DocumentImportView(APIView):
    """Import search documents, all or nothing; the search index follows in a task after commit."""

    queues_work = True  # its POST answers 503 when the broker is down (groundwork.schema)

    permission_classes = [has_role(Role.ADMIN)]
    parser_classes = IMPORT_PARSERS

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT, "application/x-ndjson": OpenApiTypes.STR},
        responses={201: DocumentImportResultSerializer, 400: OpenApiTypes.OBJECT},
        description=(
            "application/x-ndjson in the format WikiExtractor writes, one document per line: "
            '`{"id", "url", "title", "text"}` (`id` and other keys are ignored); or a JSON list of '
            "such objects (or one object). Same format as `import_documents`. A URL already stored "
            "with the same title and text is left as it is, with other content it is updated. On "
            "any bad line nothing is written and 400 lists each error with its line (position in "
            "a JSON list) and field."
        ),
    )
    def post(self, request: Request) -> Response:
        records = body_records(request.data, lines=services.parse_jsonl, objects=services.parse_objects)
        result = services.documents_import_records(records=records, source="api")
        return Response(
            {"created": result.created, "updated": result.updated, "unchanged": result.unchanged},
            status=status.HTTP_201_CREATED,
        )
