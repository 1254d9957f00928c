from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from toolset import services
from toolset.models import Document, ToolCall
from toolset.translator import translator_status


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "url", "source", "created_at"]
    list_filter = ["source"]
    search_fields = ["title", "url"]
    date_hierarchy = "created_at"
    readonly_fields = ["created_at", "generation"]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "url":
            kwargs["assume_scheme"] = "https"  # Django 6's default; silences its warning
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Document | None = None) -> list[str]:
        # The URL is the document's identity in the search index; a new URL is a new document.
        return [*self.readonly_fields, "url"] if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Document, form: Any, change: bool) -> None:
        services.document_save(document=obj)

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        services.documents_delete(documents=Document.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        services.documents_delete(documents=queryset)


@admin.register(ToolCall)
class ToolCallAdmin(admin.ModelAdmin):
    list_display = ["created_at", "session", "tool", "query", "rank", "actor_user", "actor_model"]
    list_filter = ["tool"]
    search_fields = ["session", "query", "actor_model"]
    date_hierarchy = "created_at"
    list_select_related = ["actor_user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ToolCall | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ToolCall | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # Why the translator contributes nothing, when it does not (no package, no languages).
        extra_context = {**(extra_context or {}), "title": f"Tool calls — translator: {translator_status()}"}
        return super().changelist_view(request, extra_context)
