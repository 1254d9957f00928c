from __future__ import annotations

from django.contrib import admin
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from dialogs.models import Candidate, Dialog, DialogExport, Role, Speaker, Turn
from dialogs.selectors import turn_count


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0
    fields = ["index", "speaker", "text", "model_version", "fallback", "base_text", "candidates"]
    # Who wrote a turn, and whether it was a canned reply, are facts of the chat: not edited by hand.
    readonly_fields = ["model_version", "fallback", "candidates"]
    ordering = ["index"]

    @admin.display(description="sample-and-rank")
    def candidates(self, turn: Turn) -> str:
        """A model turn's sampled candidates (with their scores) are on the turn's page."""
        count = turn.candidates.count() if turn.pk else 0
        if not count:
            return "-"
        url = reverse("admin:dialogs_turn_change", args=[turn.pk])
        return format_html('<a href="{}">{} candidates</a>', url, count)


class CandidateInline(admin.TabularInline):
    """What sample-and-rank saw: every candidate, the chosen one first, with its scores."""

    model = Candidate
    extra = 0
    fields = ["index", "chosen", "text", "scores"]
    readonly_fields = fields
    ordering = ["-chosen", "index"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    """Turns, each credited to the model version that wrote it; the fallback filter shows, with its
    counts (facets), how many answers were the safe fallback reply instead of the model's own."""

    list_display = ["dialog", "index", "speaker", "model_version", "fallback", "text"]
    list_filter = ["speaker", "fallback", "model_version"]
    show_facets = admin.ShowFacets.ALWAYS
    search_fields = ["dialog__external_id", "text"]
    readonly_fields = [
        "dialog",
        "index",
        "speaker",
        "text",
        "model_version",
        "fallback",
        "base_text",
        "research",
        "created_at",
    ]
    inlines = [CandidateInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # turns come from imports and chats


@admin.register(Dialog)
class DialogAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "purpose",
        "mode",
        "role",
        "latest_model_version",
        "fallbacks",
        "source",
        "created_at",
    ]
    list_filter = ["purpose", "mode", "source", "role"]
    search_fields = ["external_id"]
    date_hierarchy = "created_at"
    raw_id_fields = ["created_by"]
    inlines = [TurnInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dialog]:
        latest = (
            Turn.objects.filter(dialog=OuterRef("pk"), speaker=Speaker.MODEL)
            .exclude(model_version="")
            .order_by("-index")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                latest_model_version=Subquery(latest.values("model_version")[:1]),
                fallback_count=turn_count(~Q(fallback=""), dialog=OuterRef("pk")),
            )
        )

    @admin.display(description="latest model version")
    def latest_model_version(self, dialog: Dialog) -> str:
        """The version that wrote the dialog's last credited model turn (each turn has its own)."""
        return getattr(dialog, "latest_model_version", None) or "-"

    @admin.display(description="fallback replies")
    def fallbacks(self, dialog: Dialog) -> int:
        return getattr(dialog, "fallback_count", 0)


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["turn", "index", "chosen", "text", "scores"]
    list_filter = ["chosen"]
    raw_id_fields = ["turn"]


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "active"]
    list_filter = ["active"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(DialogExport)
class DialogExportAdmin(admin.ModelAdmin):
    list_display = ["id", "purpose", "status", "dialog_count", "requested_by", "created_at", "download"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in DialogExport._meta.fields] + ["download"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # exports are requested through the API, and run by a worker

    @admin.display(description="file")
    def download(self, export: DialogExport) -> str:
        if export.status != DialogExport.Status.DONE:
            return "-"
        url = reverse("api:dialog-export-download", kwargs={"pk": export.pk})
        return format_html('<a href="{}">dialogs-{}.jsonl</a>', url, export.pk)
