"""The annotation admin's chat pages: where a chat's turns are routed, the chats and the flags
workers set on model turns. Registered by ``annotation.admin``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from annotation.models import (
    Chat,
    ChatRouting,
    TurnFlag,
)
from annotation.services import chats
from groundwork.admin import ReadOnlyAdmin


@admin.register(ChatRouting)
class ChatRoutingAdmin(admin.ModelAdmin):
    """Where the model turns of finished chats go to be rated, per purpose; switched off per purpose
    with "enabled". A blank campaign means the newest open campaign of the purpose's kind."""

    list_display = ["purpose", "enabled", "campaign", "goes_to"]
    list_editable = ["enabled", "campaign"]
    list_select_related = ["campaign"]

    def get_readonly_fields(self, request: HttpRequest, obj: ChatRouting | None = None) -> Any:
        return ["purpose"] if obj is not None else []

    @admin.display(description="finished chats go to")
    def goes_to(self, routing: ChatRouting) -> str:
        campaign = chats.routed_campaign(purpose=routing.purpose)
        if campaign is None:
            return (
                "nowhere"
                if not routing.enabled
                else f"nowhere (no open {chats.ROUTED_KIND[routing.purpose]} campaign)"
            )
        return campaign.name


@admin.register(Chat)
class ChatAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "dialog_link",
        "worker",
        "purpose",
        "mode",
        "role",
        "status",
        "waiting",
        "created_at",
    ]
    list_filter = ["purpose", "mode", "status", "role"]
    list_select_related = ["dialog", "worker", "role"]
    search_fields = ["worker__username", "dialog__external_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Chat._meta.fields]

    @admin.display(description="dialog")
    def dialog_link(self, obj: Chat) -> str:
        url = reverse("admin:dialogs_dialog_change", args=[obj.dialog_id])
        return format_html('<a href="{}">{}</a>', url, obj.dialog.external_id)


@admin.register(TurnFlag)
class TurnFlagAdmin(ReadOnlyAdmin):
    list_display = ["turn", "reason", "worker", "note", "created_at"]
    list_filter = ["reason"]
    list_select_related = ["turn", "worker"]
    search_fields = ["worker__username", "turn__dialog__external_id", "note"]
    readonly_fields = [f.name for f in TurnFlag._meta.fields]
