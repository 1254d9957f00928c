"""REST API of the dialogs app: list, read and import dialogs; export them through a worker;
import, list, read and delete evaluation sets."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from django.http import FileResponse, Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from dialogs import evaluation_sets, selectors, services
from dialogs.evaluation_records import MAX_DESCRIPTION_CHARS, MAX_SET_NAME_CHARS
from dialogs.models import Dialog, DialogExport, EvaluationContext, EvaluationSet, Speaker, Turn
from groundwork.parsers import IMPORT_PARSERS, PRINTABLE_PATTERN, JSONLines, body_records, query_text
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


# --- evaluation sets --------------------------------------------------------------------------


class EvaluationTurnSerializer(serializers.Serializer):
    speaker = serializers.ChoiceField(choices=Speaker.choices)
    text = serializers.CharField()


class EvaluationContextSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="external_id")
    role = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    context = EvaluationTurnSerializer(source="turns", many=True)
    source_dialog = serializers.SlugRelatedField(slug_field="external_id", read_only=True, allow_null=True)

    class Meta:
        model = EvaluationContext
        fields = ["id", "purpose", "role", "context", "reference", "source_dialog"]


class EvaluationSetSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = EvaluationSet
        fields = [
            "id",
            "name",
            "version",
            "description",
            "source",
            "sha256",
            "context_count",
            "locked_at",
            "created_by",
            "created_at",
        ]


class EvaluationSetDetailSerializer(EvaluationSetSerializer):
    contexts = EvaluationContextSerializer(many=True, read_only=True)

    class Meta(EvaluationSetSerializer.Meta):
        fields = [*EvaluationSetSerializer.Meta.fields, "contexts"]


class EvaluationSetImportResultSerializer(EvaluationSetSerializer):
    created = serializers.SerializerMethodField(help_text="false: the latest version had these contexts.")

    class Meta(EvaluationSetSerializer.Meta):
        fields = [*EvaluationSetSerializer.Meta.fields, "created"]

    def get_created(self, evaluation_set: EvaluationSet) -> bool:
        return self.context["created"]


class EvaluationSetUploadSerializer(serializers.Serializer):
    """The set's name and description: in a JSON body beside ``contexts``, or in the query string
    of an application/x-ndjson body."""

    name = serializers.CharField(max_length=MAX_SET_NAME_CHARS)
    description = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_DESCRIPTION_CHARS
    )


class EvaluationSetViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Evaluation sets: fixed, versioned contexts that every model version is judged on. POST
    imports one (all or nothing); DELETE removes one no model was evaluated on."""

    permission_classes = [ModelPermissions]
    parser_classes = IMPORT_PARSERS
    queryset = EvaluationSet.objects.none()  # for ModelPermissions; get_queryset serves the rows

    def get_queryset(self) -> Any:
        if self.action == "retrieve":
            return selectors.evaluation_set_with_contexts()
        if self.action == "list":
            return selectors.evaluation_set_list(name=query_text(self.request.query_params, "name"))
        return selectors.evaluation_set_list()

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return EvaluationSetDetailSerializer if self.action == "retrieve" else EvaluationSetSerializer

    @extend_schema(
        parameters=[OpenApiParameter("name", OpenApiTypes.STR, description="Only the versions of this set.")],
        responses={
            200: EvaluationSetSerializer(many=True),
            400: OpenApiResponse(description="A filter the database cannot compare."),
        },
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[
            OpenApiParameter("name", OpenApiTypes.STR, description="The set's name (x-ndjson bodies)."),
            OpenApiParameter("description", OpenApiTypes.STR, description="(x-ndjson bodies)"),
        ],
        request={
            "application/json": inline_serializer(
                "EvaluationSetUpload",
                {
                    "name": serializers.CharField(max_length=MAX_SET_NAME_CHARS),
                    "description": serializers.CharField(required=False, max_length=MAX_DESCRIPTION_CHARS),
                    "contexts": serializers.ListField(child=serializers.JSONField()),
                },
            ),
            "application/x-ndjson": OpenApiTypes.STR,
        },
        responses={
            201: EvaluationSetImportResultSerializer,
            200: EvaluationSetImportResultSerializer,
            400: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
        },
        description=(
            "Import an evaluation set: a JSON object `{name, description?, contexts: [...]}`, or "
            "application/x-ndjson with one context per line and `?name=` (and `&description=`). "
            'A context: `{"id", "context": [{"speaker", "text"}], "purpose": '
            'quality|safety|groundedness|role, "role"?, "reference"?}`; the format of '
            "`import_evaluation_set`. On any bad context nothing is written and 400 lists each error "
            "with its line (position in `contexts`) and field. A name already in use gets its next "
            "version (201); contexts identical to its latest version make none, and 200 answers "
            "that version."
        ),
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if isinstance(request.data, JSONLines):
            upload = EvaluationSetUploadSerializer(data=request.query_params)
            upload.is_valid(raise_exception=True)
            records = evaluation_sets.parse_jsonl(request.data.lines)
        else:
            if not isinstance(request.data, dict):
                raise ParseError('Expected a JSON object: {"name", "description"?, "contexts": [...]}.')
            upload = EvaluationSetUploadSerializer(data=request.data)
            upload.is_valid(raise_exception=True)
            contexts = request.data.get("contexts")
            if not isinstance(contexts, list):
                raise ValidationError({"contexts": ["expected a list of contexts"]})
            records = evaluation_sets.parse_objects(contexts)
        result = evaluation_sets.evaluation_set_import(
            name=upload.validated_data["name"],
            description=upload.validated_data["description"],
            records=records,
            source="api",
            created_by=request.user,
        )
        body = EvaluationSetImportResultSerializer(result.evaluation_set, context={"created": result.created})
        return Response(body.data, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    @extend_schema(responses={204: None, 409: OpenApiTypes.OBJECT})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        evaluation_sets.evaluation_set_delete(evaluation_set=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
