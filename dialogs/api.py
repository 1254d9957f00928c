"""REST API of the dialogs app: list, read and import dialogs; export them through a worker."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from django.http import FileResponse, Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from dialogs import selectors, services
from dialogs.models import Dialog, DialogExport, Turn
from groundwork.parsers import IMPORT_PARSERS, PRINTABLE_PATTERN, body_records, query_text
from groundwork.roles import ModelPermissions


class TurnSerializer(serializers.ModelSerializer):
    class Meta:
        model = Turn
        fields = ["index", "speaker", "text", "model_version", "fallback"]


class DialogSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="external_id")
    role = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    turns = TurnSerializer(many=True, read_only=True)

    class Meta:
        model = Dialog
        fields = ["id", "purpose", "mode", "role", "source", "created_at", "turns", "meta"]


ImportResultSerializer = inline_serializer(
    "DialogImportResult",
    {
        "created": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(),
        "ids": serializers.ListField(child=serializers.CharField()),
    },
)


class DialogViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Dialogs with their turns. POST imports dialogs, all or nothing."""

    serializer_class = DialogSerializer
    permission_classes = [ModelPermissions]
    parser_classes = IMPORT_PARSERS
    lookup_field = "external_id"
    lookup_url_kwarg = "id"
    lookup_value_regex = PRINTABLE_PATTERN  # any id the importers take, slashes included
    queryset = Dialog.objects.none()  # for ModelPermissions; get_queryset serves the rows

    def get_queryset(self) -> Any:
        params = self.request.query_params
        return selectors.dialog_list(
            purpose=query_text(params, "purpose", choices=Dialog.Purpose.values),
            source=query_text(params, "source"),
        ).prefetch_related(Prefetch("turns", queryset=Turn.objects.order_by("index")))

    @extend_schema(
        parameters=[
            OpenApiParameter("purpose", OpenApiTypes.STR, enum=Dialog.Purpose.values),
            OpenApiParameter("source", OpenApiTypes.STR),
        ],
        responses={
            200: DialogSerializer(many=True),
            400: OpenApiResponse(description="A filter the database cannot compare."),
        },
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT, "application/x-ndjson": OpenApiTypes.STR},
        responses={201: ImportResultSerializer, 400: OpenApiTypes.OBJECT},
        description=(
            "Import dialogs: a JSON object (one dialog), a JSON list of dialogs, or "
            "application/x-ndjson with one dialog per line. Same format as `import_dialogs`. "
            "On any bad dialog nothing is written and 400 lists each error with its line "
            "(position in a JSON list) and field."
        ),
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        records = body_records(request.data, lines=services.parse_jsonl, objects=services.parse_objects)
        result = services.dialogs_import(records=records, source="api", created_by=request.user)
        return Response(
            {"created": result.created, "unchanged": result.unchanged, "ids": result.ids},
            status=status.HTTP_201_CREATED,
        )


class DialogExportSerializer(serializers.ModelSerializer):
    download = serializers.SerializerMethodField()

    class Meta:
        model = DialogExport
        fields = [
            "id",
            "purpose",
            "status",
            "dialog_count",
            "sha256",
            "error",
            "created_at",
            "finished_at",
            "download",
        ]
        read_only_fields = ["status", "dialog_count", "sha256", "error", "created_at", "finished_at"]

    def get_download(self, export: DialogExport) -> str | None:
        if export.status != DialogExport.Status.DONE:
            return None
        return self.context["request"].build_absolute_uri(
            reverse("api:dialog-export-download", kwargs={"pk": export.pk})
        )


class DialogExportViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Exports of dialogs as JSONL, written by a worker: POST returns 202 and the job to poll."""

    queues_work = True  # its POST answers 503 when the broker is down (groundwork.schema)

    serializer_class = DialogExportSerializer
    permission_classes = [ModelPermissions]
    queryset = DialogExport.objects.none()

    def get_queryset(self) -> Any:
        return selectors.dialog_export_list()

    @extend_schema(responses={202: DialogExportSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        export = services.dialog_export_request(
            requested_by=request.user, purpose=serializer.validated_data.get("purpose", "")
        )
        return Response(self.get_serializer(export).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={(200, "application/x-ndjson"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None) -> FileResponse:
        export = self.get_object()
        if export.status != DialogExport.Status.DONE:
            raise Http404("This export is not finished.")
        return FileResponse(
            open(export.path, "rb"),
            as_attachment=True,
            filename=f"dialogs-{export.pk}.jsonl",
            content_type="application/x-ndjson",
        )
