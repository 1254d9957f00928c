from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from dialogs.models import Candidate, Dialog, DialogExport, Role, Turn


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0
    fields = ["index", "speaker", "text", "base_text"]
    ordering = ["index"]


@admin.register(Dialog)
class DialogAdmin(admin.ModelAdmin):
    list_display = ["external_id", "purpose", "mode", "role", "model_version", "source", "created_at"]
    list_filter = ["purpose", "mode", "source", "role"]
    search_fields = ["external_id"]
    date_hierarchy = "created_at"
    raw_id_fields = ["created_by"]
    inlines = [TurnInline]


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["turn", "index", "chosen", "text"]
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
