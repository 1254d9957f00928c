"""``/api/v1/datasets/``, ``/api/v1/training-jobs/``, ``/api/v1/models/`` (DESIGN.md HTTP contract),
and ``/api/v1/evaluation-sets/{id}/report`` (read by admins and researchers).

Reading needs the model's view permission (admins and researchers); exporting a dataset needs
``trainer.export_datasetversion`` (both), starting or cancelling training, choosing the serving
model and importing a base model (``POST /api/v1/models/import/``) need
``trainer.run_trainingjob`` / ``trainer.serve_modelversion`` / ``trainer.add_modelversion``
(researchers). Long work answers 202 with the row to poll.
"""

from __future__ import annotations

import csv
from typing import Any

from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Campaign
from dialogs.models import EvaluationSet, Purpose
from groundwork.parsers import RowsField, query_text
from trainer import selectors
from trainer.evaluation_report import CSV_HEADER, report_csv_rows, report_json
from trainer.evaluation_report_loader import REPORT_PERMISSIONS, evaluation_set_report, report_urls
from trainer.hyperparameters import DEFAULT_PRESET, MODEL_PRESETS
from trainer.models import DatasetVersion, ModelVersion, TrainingJob
from trainer.services import model_imports, requests

NAME_MAX_CHARS = ModelVersion._meta.get_field("name").max_length


def permissions(*, read: str, write: str) -> type[BasePermission]:
    """Safe methods need ``read``, the others ``write`` (``app_label.codename``)."""

    class TrainerPermission(BasePermission):
        message = "You do not have permission to do this."

        def has_permission(self, request: Any, view: Any) -> bool:
            needed = read if request.method in ("GET", "HEAD", "OPTIONS") else write
            return bool(request.user and request.user.has_perm(needed))

    return TrainerPermission


class ModelVersionNameField(serializers.SlugRelatedField):
    """A model version by its name; a name no version can have (a NUL, which PostgreSQL cannot
    even compare, or too long) is refused before it is looked up."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(slug_field="name", queryset=ModelVersion.objects.all(), **kwargs)

    def to_internal_value(self, data: Any) -> ModelVersion:
        if not isinstance(data, str) or "\x00" in data or len(data) > NAME_MAX_CHARS:
            self.fail("invalid")
        return super().to_internal_value(data)


# --- datasets -----------------------------------------------------------------------------------


class DatasetVersionSerializer(serializers.ModelSerializer):
    tokenizer_source = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    downloads = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "kind",
            "status",
            "campaigns",
            "tokenizer_source",
            "filters",
            "validation_percent",
            "done",
            "total",
            "sha256",
            "tokenizer_sha256",
            "counts",
            "files",
            "error",
            "created_at",
            "finished_at",
            "downloads",
        ]
        read_only_fields = fields

    def get_downloads(self, dataset: DatasetVersion) -> dict[str, str]:
        if dataset.status != DatasetVersion.Status.READY:
            return {}
        request = self.context["request"]
        return {
            name: request.build_absolute_uri(
                reverse("api:dataset-file", kwargs={"pk": dataset.pk, "name": name})
            )
            for name in sorted(dataset.files)
        }


class DatasetRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=DatasetVersion.Kind.choices)
    campaigns = RowsField(queryset=Campaign.objects.all(), required=False)
    tokenizer_source = ModelVersionNameField(required=False, allow_null=True)
    validation_percent = serializers.IntegerField(min_value=0, max_value=50, default=10)
    purposes = serializers.ListField(
        child=serializers.ChoiceField(choices=Purpose.choices), required=False, max_length=len(Purpose)
    )
    thresholds = serializers.DictField(
        child=serializers.FloatField(min_value=0, max_value=1),
        required=False,
        help_text="filtered datasets: the least P(safe), P(sensible), P(specific), P(interesting) kept",
    )
    model_versions = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=100,
        help_text="pretrain and filtered datasets: only the model turns these model versions wrote",
    )


class DatasetViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Dataset versions: POST ``{kind, campaigns}`` returns 202 and the dataset a worker builds."""

    queues_work = True  # its POST answers 503 when the broker is down (groundwork.schema)

    serializer_class = DatasetVersionSerializer
    permission_classes = [
        permissions(read="trainer.view_datasetversion", write="trainer.export_datasetversion")
    ]
    queryset = DatasetVersion.objects.select_related("tokenizer_source").prefetch_related("campaigns")

    @extend_schema(request=DatasetRequestSerializer, responses={202: DatasetVersionSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        form = DatasetRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        dataset = requests.dataset_request(
            kind=data["kind"],
            campaigns=data.get("campaigns", []),
            tokenizer_source=data.get("tokenizer_source"),
            purposes=data.get("purposes", []),
            model_versions=data.get("model_versions", []),
            validation_percent=data["validation_percent"],
            thresholds=data.get("thresholds"),
            created_by=request.user,
        )
        return Response(self.get_serializer(dataset).data, status=status.HTTP_202_ACCEPTED)

    # Routed in groundwork/urls.py (api:dataset-file), not by the router: the documented URL has
    # no trailing slash, and a router route needs one.
    @extend_schema(
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,  # manifest.json
            (200, "application/octet-stream"): OpenApiTypes.BINARY,  # the JSONL and Parquet splits
        }
    )
    def file(self, request: Request, pk: str | None = None, name: str = "") -> FileResponse:
        dataset = self.get_object()
        path = requests.dataset_file(dataset, name)
        return FileResponse(open(path, "rb"), as_attachment=True, filename=f"dataset-{dataset.pk}-{name}")


# --- training jobs ------------------------------------------------------------------------------


class TrainingMemorySerializer(serializers.Serializer):
    """Estimated bytes of one training step (``trainer.sizing.training_memory``)."""

    total = serializers.IntegerField()
    weights = serializers.IntegerField(help_text="fp32 weights, and their bf16 copies under bf16")
    gradients = serializers.IntegerField()
    optimizer = serializers.IntegerField(help_text="AdamW's two fp32 moments")
    activations = serializers.IntegerField(
        help_text="what the forward keeps for backward, batch_size × max_length"
    )
    precision = serializers.CharField()


class TrainingSizeSerializer(serializers.Serializer):
    """The size of a job's model (``trainer.selectors.job_size``)."""

    preset = serializers.CharField(
        allow_null=True, help_text="the preset the job chose (hyperparameters.preset)"
    )
    parameters = serializers.IntegerField(allow_null=True)
    parameters_exact = serializers.BooleanField(
        help_text="counted on the model the job made (or its base), rather than computed from the sizes"
    )
    flops_per_token = serializers.IntegerField(
        allow_null=True,
        help_text="training FLOPs of a token at max_length: 6 N + 12 n_layer d_model max_length",
    )
    memory = TrainingMemorySerializer(allow_null=True)
    batch_size = serializers.IntegerField()
    max_length = serializers.IntegerField()
    precision = serializers.CharField()
    precision_decided = serializers.BooleanField(help_text="false: fp32 assumed until a worker decides")


class TrainingJobSerializer(serializers.ModelSerializer):
    base_model = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    model_version = serializers.SerializerMethodField()
    size = serializers.SerializerMethodField()

    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "kind",
            "status",
            "base_model",
            "datasets",
            "hyperparameters",
            "size",
            "step",
            "total_steps",
            "loss",
            "tokens_per_second",
            "average_tokens_per_second",
            "device",
            "precision",
            "history",
            "metrics",
            "attempts",
            "checkpoint_step",
            "heartbeat_at",
            "cancel_requested",
            "error",
            "model_version",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_model_version(self, job: TrainingJob) -> str | None:
        version = getattr(job, "model_version", None)
        return version.name if version else None

    @extend_schema_field(TrainingSizeSerializer(allow_null=True))
    def get_size(self, job: TrainingJob) -> dict[str, Any] | None:
        return selectors.job_size(job)


class TrainingRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingJob.Kind.choices)
    datasets = RowsField(queryset=DatasetVersion.objects.all())
    base_model = ModelVersionNameField(required=False, allow_null=True)
    hyperparameters = serializers.DictField(
        required=False,
        default=dict,
        help_text=(
            "steps, learning_rate, batch_size, max_length, warmup_steps, weight_decay, checkpoint_every, "
            "seed, bf16, report_every, qs_mix_share, dpo_beta; pretrain jobs also preset (one of "
            f"{', '.join(MODEL_PRESETS)}; default {DEFAULT_PRESET}) and model "
            "({d_model, n_layer, n_head, d_ff}, each replacing the preset's)"
        ),
    )


class TrainingJobViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Training jobs: POST returns 202 and the job; GET it for status, progress and metrics."""

    queues_work = True  # its POST answers 503 when the broker is down (groundwork.schema)

    serializer_class = TrainingJobSerializer
    permission_classes = [permissions(read="trainer.view_trainingjob", write="trainer.run_trainingjob")]
    queryset = TrainingJob.objects.select_related("base_model", "model_version").prefetch_related("datasets")

    @extend_schema(request=TrainingRequestSerializer, responses={202: TrainingJobSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        form = TrainingRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        job = requests.training_request(
            kind=data["kind"],
            datasets=data["datasets"],
            base_model=data.get("base_model"),
            hyperparameters=data["hyperparameters"],
            created_by=request.user,
        )
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={
            200: TrainingJobSerializer,
            409: OpenApiResponse(description="The job has already ended."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = requests.training_cancel(job=self.get_object(), by=request.user)
        return Response(self.get_serializer(job).data)


# --- model versions -----------------------------------------------------------------------------


class ModelVersionListSerializer(serializers.ListSerializer):
    """A list of model versions, whose ancestors are read once for the whole list."""

    def to_representation(self, data: Any) -> list[dict[str, Any]]:
        versions = list(data.all() if hasattr(data, "all") else data)
        self.context["ancestors"] = selectors.ancestors(versions)
        return super().to_representation(versions)


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    lineage = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        list_serializer_class = ModelVersionListSerializer
        fields = [
            "id",
            "name",
            "kind",
            "source",
            "serving",
            "parent",
            "lineage",
            "config",
            "parameters",
            "tokenizer_sha256",
            "metrics",
            "device",
            "precision",
            "created_at",
        ]
        read_only_fields = fields

    def get_lineage(self, version: ModelVersion) -> dict[str, Any]:
        """The job that made it, its datasets and their campaigns, and the chain of parents."""
        job = version.job
        datasets = list(job.datasets.all()) if job else []
        known = self.context.get("ancestors") or {}
        ancestors = known[version.pk] if version.pk in known else selectors.ancestors([version])[version.pk]
        return {
            "job": job.pk if job else None,
            "job_kind": job.kind if job else None,
            "datasets": [d.pk for d in datasets],
            "campaigns": sorted({c.pk for d in datasets for c in d.campaigns.all()}),
            "ancestors": [ancestor.name for ancestor in ancestors],
        }


class ModelImportSerializer(serializers.Serializer):
    folder = serializers.CharField(
        max_length=500,
        help_text="A folder on the server under MODEL_IMPORT_ROOTS (a relative path starts at the first) "
        "holding config.json, model.safetensors and the tokenizer",
    )
    name = serializers.CharField(max_length=NAME_MAX_CHARS, help_text="The new model version's name")


class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Model versions with lineage and metrics; POST ``{id}/serve/`` makes one answer chats, POST
    ``import/`` imports a base model of the lab's own from a folder on the server."""

    serializer_class = ModelVersionSerializer
    permission_classes = [permissions(read="trainer.view_modelversion", write="trainer.serve_modelversion")]
    queryset = ModelVersion.objects.select_related("parent", "job").prefetch_related(
        "job__datasets__campaigns"
    )

    def get_permissions(self) -> list[BasePermission]:
        if self.action == "import_model":
            return [permissions(read="trainer.view_modelversion", write="trainer.add_modelversion")()]
        return super().get_permissions()

    @extend_schema(request=ModelImportSerializer, responses={201: ModelVersionSerializer})
    @action(detail=False, methods=["post"], url_path="import", url_name="import")
    def import_model(self, request: Request) -> Response:
        """Copy a transformers causal LM from a folder under MODEL_IMPORT_ROOTS as a model version
        of kind ``imported`` (``model_imports.model_import``); 400 says what is wrong and where."""
        form = ModelImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        version = model_imports.model_import(
            folder=form.validated_data["folder"], name=form.validated_data["name"], created_by=request.user
        )
        return Response(self.get_serializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ModelVersionSerializer})
    @action(detail=True, methods=["post"])
    def serve(self, request: Request, pk: str | None = None) -> Response:
        version = requests.model_serve(model=self.get_object())
        return Response(self.get_serializer(version).data)


# --- evaluation reports -------------------------------------------------------------------------


class ReportPermission(BasePermission):
    """Reading a report needs the set's and the model versions' view permissions (admins and
    researchers)."""

    message = "You do not have permission to do this."

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.has_perms(REPORT_PERMISSIONS))


class EvaluationReportView(APIView):
    """``GET /api/v1/evaluation-sets/{id}/report``: the set's report as JSON, or ``?format=csv``."""

    permission_classes = [ReportPermission]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # ?format= names the report's format, not a DRF renderer: errors are answered in JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
            OpenApiParameter("a", OpenApiTypes.STR, description="Compare this responder (with b)."),
            OpenApiParameter("b", OpenApiTypes.STR, description="... with this one: a's mean minus b's."),
            OpenApiParameter("pairs", OpenApiTypes.STR, enum=["all"], description="Compare every pair."),
        ],
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "text/csv"): OpenApiTypes.STR,
            400: OpenApiTypes.OBJECT,
            404: None,
        },
        description=(
            "Rows: the model versions evaluated on the set and the human baseline. Per metric "
            "(sensibleness, specificity, interestingness, ssi, safety, groundedness, informativeness, "
            "citation_accuracy, helpfulness, role_consistency): `{estimate, low, high, n}`, a 95% "
            "percentile bootstrap interval over the set's contexts, or null when no response was "
            "counted. `comparisons`: a's mean minus b's per metric with a paired bootstrap interval "
            "(`excludes_zero`), and a's side-by-side win rate (Wilson interval); `?a=&b=` chooses the "
            "pair, `?pairs=all` every pair, else the two latest versions. `win_rates`: every pair "
            "compared side by side. `automatic`: the evaluation's own measurements; `correlations`: "
            "how each tracked its human metric across versions. `?format=csv`: one row per "
            "responder × metric: responder, metric, value, low, high, n."
        ),
    )
    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        evaluation_set = get_object_or_404(EvaluationSet, pk=pk)
        format = query_text(request.query_params, "format", choices=["json", "csv"]) or "json"
        report, inputs = evaluation_set_report(evaluation_set, params=request.query_params)
        if format == "csv":
            response = HttpResponse(content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="evaluation-set-{pk}-report.csv"'
            writer = csv.writer(response)
            writer.writerow(CSV_HEADER)
            writer.writerows(report_csv_rows(report))
            return response
        body = report_json(report)
        for row in body["rows"]:
            evaluation = inputs.evaluations.get(row["responder"])
            row["evaluation"] = (
                {
                    "id": evaluation.pk,
                    "status": evaluation.status,
                    "done": evaluation.done,
                    "total": evaluation.total,
                }
                if evaluation
                else None
            )
            row["model_version"] = (
                {
                    "id": evaluation.model_version_id,
                    "name": evaluation.model_version.name,
                    # Its lineage: the jobs, datasets and campaigns behind the version.
                    "url": request.build_absolute_uri(
                        reverse("api:model-version-detail", kwargs={"pk": evaluation.model_version_id})
                    ),
                }
                if evaluation
                else None
            )
        urls = report_urls(evaluation_set)
        return Response(
            {
                "evaluation_set": {
                    "id": evaluation_set.pk,
                    "name": evaluation_set.name,
                    "version": evaluation_set.version,
                    "context_count": evaluation_set.context_count,
                },
                "responses": inputs.responses,
                "page": request.build_absolute_uri(urls["page"]),
                **body,
            }
        )
