"""REST API for a campaign's rater-aware aggregation (Dawid–Skene, ``annotation.services.rater_models``):
queue it on a worker, and read its progress and outcome."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Campaign, RaterModelRun
from annotation.services import consensus
from groundwork.roles import Role, has_role


class RaterModelRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = RaterModelRun
        fields = [
            "id",
            "campaign",
            "method",
            "status",
            "stage",
            "done",
            "total",
            "judgments",
            "items",
            "agreement",
            "iterations",
            "error",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class RaterModelView(APIView):
    """A campaign aggregated by Dawid–Skene beside its majority vote. POST (admins, as the other
    campaign writes) queues a run on a worker, or returns the one already pending or running (202);
    GET (admins and researchers) returns the latest run: its progress (``done`` of ``total`` steps,
    ``stage``) and, once done, per attribute the share of items whose label equals the majority's."""

    def get_permissions(self) -> list[BasePermission]:
        if self.request.method == "POST":
            return [has_role(Role.ADMIN)()]
        return [has_role(Role.ADMIN, Role.RESEARCHER)()]

    @extend_schema(request=None, responses={202: RaterModelRunSerializer, 404: None, 503: None})
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        run = consensus.rater_aggregation_request(campaign=campaign, requested_by=request.user)
        return Response(RaterModelRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: RaterModelRunSerializer, 404: None})
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        run = campaign.rater_model_runs.first()
        if run is None:
            raise NotFound("This campaign has no Dawid–Skene run yet.")
        return Response(RaterModelRunSerializer(run).data)
