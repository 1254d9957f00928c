"""The annotation admin's record pages: workers' gold records (lifting blocks), items with their
consensus labels, and the consensus and Dawid–Skene runs. Registered by ``annotation.admin``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from annotation.models import (
    AggregationRun,
    ConsensusLabel,
    Item,
    RaterModelRun,
    WorkerQuality,
)
from annotation.services import assignments
from groundwork.admin import ReadOnlyAdmin


@admin.register(WorkerQuality)
class WorkerQualityAdmin(admin.ModelAdmin):
    """Gold records are kept by the services; an admin lifts blocks with the action."""

    list_display = [
        "worker",
        "campaign",
        "gold_seen",
        "gold_correct",
        "accuracy",
        "qualified",
        "blocked",
        "blocked_reason",
    ]
    list_filter = ["blocked", "qualified", "campaign"]
    list_select_related = ["worker", "campaign"]
    search_fields = ["worker__username", "campaign__name"]
    actions = ["lift_block"]

    @admin.display(description="gold accuracy")
    def accuracy(self, quality: WorkerQuality) -> str:
        return "-" if quality.gold_accuracy is None else f"{quality.gold_accuracy:.0%}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkerQuality | None = None) -> bool:
        # The list's action needs "change"; a record itself is never edited by hand.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: WorkerQuality | None = None) -> bool:
        return False  # deleting a record would reset a worker's gold history behind the services' back

    @admin.action(description="Lift the block", permissions=["change"])
    def lift_block(self, request: HttpRequest, queryset: QuerySet[WorkerQuality]) -> None:
        lifted = 0
        for quality in queryset.select_related("campaign", "worker"):
            lifted += quality.blocked
            assignments.worker_unblock(campaign=quality.campaign, worker=quality.worker)
        self.message_user(request, f"Block lifted for {lifted} worker(s).", messages.SUCCESS)


class ConsensusLabelInline(admin.TabularInline):
    model = ConsensusLabel
    fields = ["attribute", "label", "yes", "no", "maybe", "yes_fraction", "rules_version", "computed_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Item)
class ItemAdmin(ReadOnlyAdmin):
    """Items are made by campaigns and imports; here they are read, with their consensus labels."""

    list_display = ["key", "campaign", "kind", "open_slots", "judgment_count", "decided_at_raters"]
    list_filter = ["kind", "campaign"]
    list_select_related = ["campaign"]
    search_fields = ["key"]
    fields = [
        "campaign",
        "key",
        "kind",
        "open_slots",
        "judgment_count",
        "decided_at_raters",
        "context",
        "response",
        "gold_answers",
        "evaluation_context",
        "pair",
    ]
    readonly_fields = fields
    inlines = [ConsensusLabelInline]


@admin.register(AggregationRun)
class AggregationRunAdmin(admin.ModelAdmin):
    """Consensus runs are started from a campaign's page and run by a worker; here they are read."""

    list_display = ["id", "campaign", "status", "done", "total", "requested_by", "created_at", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["campaign", "requested_by"]
    readonly_fields = [f.name for f in AggregationRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AggregationRun | None = None) -> bool:
        return False


@admin.register(RaterModelRun)
class RaterModelRunAdmin(ReadOnlyAdmin):
    """Dawid–Skene runs are started from a campaign's page and run by a worker; here they are read."""

    list_display = [
        "id",
        "campaign",
        "method",
        "status",
        "done",
        "total",
        "judgments",
        "items",
        "finished_at",
    ]
    list_filter = ["status"]
    list_select_related = ["campaign"]
    readonly_fields = [f.name for f in RaterModelRun._meta.fields]
