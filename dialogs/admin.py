from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.files.uploadedfile import UploadedFile
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from dialogs import evaluation_sets
from dialogs.evaluation_records import MAX_SET_NAME_CHARS
from dialogs.models import (
    Candidate,
    Dialog,
    DialogExport,
    EvaluationContext,
    EvaluationSet,
    Role,
    Speaker,
    Turn,
)
from dialogs.selectors import turn_count
from groundwork.admin import ReadOnlyAdmin, ServiceAddMixin
from groundwork.errors import DomainError
from groundwork.jsonl import ImportRefused


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


# --- evaluation sets --------------------------------------------------------------------------


class EvaluationSetImportForm(forms.Form):
    """A JSONL file of contexts, imported as the set ``name`` (its next version when it exists)."""

    name = forms.CharField(max_length=MAX_SET_NAME_CHARS, help_text="A name in use gets its next version.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    file = forms.FileField(
        label="JSONL file",
        help_text=(
            'One context per line: {"id", "context": [{"speaker", "text"}], '
            '"purpose": quality|safety|groundedness|role, "role"?, "reference"?}. All or nothing.'
        ),
    )

    def service_kwargs(self) -> dict[str, Any]:
        return {
            "name": self.cleaned_data["name"],
            "description": self.cleaned_data["description"],
            "upload": self.cleaned_data["file"],
        }


def _import_upload(*, name: str, description: str, upload: UploadedFile, created_by: Any) -> EvaluationSet:
    """The admin's add page: import the uploaded file; the set says whether it is new."""
    result = evaluation_sets.evaluation_set_import(
        name=name,
        description=description,
        records=evaluation_sets.parse_jsonl(upload),
        source=(upload.name or "upload")[:100],
        created_by=created_by,
    )
    result.evaluation_set.import_created = result.created  # type: ignore[attr-defined]
    return result.evaluation_set


@admin.register(EvaluationSet)
class EvaluationSetAdmin(ServiceAddMixin, ReadOnlyAdmin):
    """Evaluation sets: read-only (a changed set is a new version); an unlocked set may be
    deleted, through the service that refuses a locked one."""

    add_permission = "dialogs.add_evaluationset"
    add_form = EvaluationSetImportForm
    add_service = staticmethod(_import_upload)
    add_refused = DomainError
    add_title = "Import an evaluation set"
    add_submit = "Import"
    add_fieldsets = [("Evaluation set", "", ["name", "description", "file"])]

    list_display = ["name", "version", "context_count", "locked_at", "source", "created_by", "created_at"]
    list_display_links = ["name", "version"]
    list_filter = ["name"]
    list_select_related = ["created_by"]
    search_fields = ["name"]
    fields = [
        "name",
        "version",
        "description",
        "contexts_link",
        "report_link",
        "source",
        "sha256",
        "locked_at",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description="contexts")
    def contexts_link(self, evaluation_set: EvaluationSet) -> str:
        url = reverse("admin:dialogs_evaluationcontext_changelist")
        return format_html(
            '<a href="{}?evaluation_set__id__exact={}">{} contexts</a>',
            url,
            evaluation_set.pk,
            evaluation_set.context_count,
        )

    @admin.display(description="report")
    def report_link(self, evaluation_set: EvaluationSet) -> str:
        # The trainer serves the report (by URL name: dialogs imports no other app).
        return format_html(
            '<a href="{}">metrics of every version evaluated on it</a>',
            reverse("evaluation-report", args=[evaluation_set.pk]),
        )

    def get_add_form(self, request: HttpRequest) -> forms.Form:
        return self.add_form(request.POST or None, request.FILES or None)

    def added_message(self, obj: EvaluationSet) -> str:
        if getattr(obj, "import_created", True):
            return f"{obj.context_count} contexts imported as {obj}."
        return f"The file has the same {obj.context_count} contexts as {obj}: no new version was made."

    def refusal_messages(self, refusal: Exception) -> list[str]:
        if isinstance(refusal, ImportRefused):
            lines = [f"line {e.line}: {e.field}: {e.message}" for e in refusal.errors]
            return [f"Nothing was imported: {len(refusal.errors)} bad line(s).", *lines]
        return [str(refusal)]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = request.user.has_perm("dialogs.delete_evaluationset")
        return allowed and (obj is None or not obj.locked)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, each through the service
        return actions

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, set[str], Any]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(EvaluationContext._meta.verbose_name)  # its contexts go with the set
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: EvaluationSet) -> None:
        evaluation_sets.evaluation_set_delete(evaluation_set=obj)


@admin.register(EvaluationContext)
class EvaluationContextAdmin(ReadOnlyAdmin):
    list_display = ["external_id", "evaluation_set", "purpose", "role", "last_turn", "source_dialog"]
    list_filter = ["evaluation_set", "purpose"]
    list_select_related = ["evaluation_set", "role", "source_dialog"]
    search_fields = ["external_id"]
    fields = [
        "evaluation_set",
        "index",
        "external_id",
        "purpose",
        "role",
        "transcript",
        "reference",
        "source_dialog",
    ]
    readonly_fields = fields

    @admin.display(description="last turn")
    def last_turn(self, context: EvaluationContext) -> str:
        last = context.turns[-1] if context.turns else {}
        return f"{last.get('speaker', '')}: {last.get('text', '')[:80]}"

    @admin.display(description="context")
    def transcript(self, context: EvaluationContext) -> str:
        return format_html_join(
            "", "<p><strong>{}</strong>: {}</p>", ((t["speaker"], t["text"]) for t in context.turns)
        )
