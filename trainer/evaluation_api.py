"""``/api/v1/evaluations/``: a model version answering an evaluation set (DESIGN.md HTTP contract).

Reading needs ``trainer.view_evaluation`` (admins and researchers); asking for one needs
``trainer.add_evaluation`` (researchers). POST answers 202 with the evaluation to poll (its
status, ``done``/``total`` and, once done, ``metrics``); 503 when the broker cannot take it.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from dialogs.models import EvaluationSet
from groundwork.parsers import DatabaseIdField, query_number, query_text
from trainer.api import ModelVersionNameField, permissions
from trainer.models import Evaluation
from trainer.services import evaluations


class EvaluationSerializer(serializers.ModelSerializer):
    evaluation_set_name = serializers.SerializerMethodField(help_text="The set's name and version.")
    model_version = serializers.SlugRelatedField(slug_field="name", read_only=True)
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    progress = serializers.SerializerMethodField(help_text="done / total, 0 to 1.")
    metrics = serializers.JSONField(
        read_only=True,
        help_text=(
            "Once done, what was measured without raters: discriminators (each ranked attribute's "
            "mean P(attribute = 1) over the chosen answers), hits_at_1 (held-out response ranking, "
            "the true next turn among hits_candidates, over hits_contexts contexts with a "
            "reference), validation_loss, contexts_per_second, fallbacks."
        ),
    )

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "evaluation_set",
            "evaluation_set_name",
            "model_version",
            "status",
            "done",
            "total",
            "progress",
            "metrics",
            "error",
            "attempts",
            "heartbeat_at",
            "requested_by",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_evaluation_set_name(self, evaluation: Evaluation) -> str:
        return str(evaluation.evaluation_set)

    def get_progress(self, evaluation: Evaluation) -> float:
        return round(evaluation.done / evaluation.total, 4) if evaluation.total else 0.0


class EvaluationRequestSerializer(serializers.Serializer):
    evaluation_set = serializers.PrimaryKeyRelatedField(
        queryset=EvaluationSet.objects.all(), pk_field=DatabaseIdField(), help_text="The set's id."
    )
    model_version = ModelVersionNameField(help_text="The model version's name.")


class EvaluationViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Evaluations: POST ``{evaluation_set, model_version}`` returns 202 and the evaluation a
    worker runs (an existing one for the pair as it is; a failed one queued again)."""

    queues_work = True  # its POST answers 503 when the broker is down (groundwork.schema)

    serializer_class = EvaluationSerializer
    permission_classes = [permissions(read="trainer.view_evaluation", write="trainer.add_evaluation")]
    queryset = Evaluation.objects.select_related("evaluation_set", "model_version", "requested_by")

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        params = self.request.query_params
        evaluation_set = query_number(params, "evaluation_set", minimum=1)
        model_version = query_text(params, "model_version")
        if evaluation_set is not None:
            queryset = queryset.filter(evaluation_set_id=evaluation_set)
        if model_version is not None:
            queryset = queryset.filter(model_version__name=model_version)
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("evaluation_set", OpenApiTypes.INT, description="Only this set's (by id)."),
            OpenApiParameter("model_version", OpenApiTypes.STR, description="Only this version's (by name)."),
        ],
        responses={
            200: EvaluationSerializer(many=True),
            400: OpenApiResponse(description="A filter that is not an id or not text."),
        },
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=EvaluationRequestSerializer, responses={202: EvaluationSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        form = EvaluationRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        evaluation = evaluations.evaluation_request(
            evaluation_set=form.validated_data["evaluation_set"],
            model_version=form.validated_data["model_version"],
            requested_by=request.user,
        )
        return Response(self.get_serializer(evaluation).data, status=status.HTTP_202_ACCEPTED)
