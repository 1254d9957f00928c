"""The annotation admin: safety objectives and campaigns (with agreement, workers and consensus
runs); worker quality, items and runs are in ``admin_records``, chats in ``admin_chats``, an
evaluation set's campaign pages in ``admin_evaluations``. Every write goes through
``annotation.services``."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from annotation import admin_chats, admin_records, agreement, selectors  # noqa: F401 (they register their pages)
from annotation.admin_evaluations import EvaluationSetPages
from annotation.errors import AnnotationError
from annotation.models import (
    AggregationRun,
    Campaign,
    Item,
    RaterModelRun,
    SafetyObjective,
    item_complete,
)
from annotation.services import campaigns, consensus
from dialogs.models import Dialog, Role
from groundwork.admin import ServiceAddMixin, progress_bar

AGGREGATE_PERMISSION = "annotation.add_aggregationrun"
RATER_MODEL_PERMISSION = "annotation.add_ratermodelrun"


# --- safety objectives ------------------------------------------------------------------------


@admin.register(SafetyObjective)
class SafetyObjectiveAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "active", "order", "guidance"]
    list_editable = ["name", "active", "order", "guidance"]
    list_filter = ["active"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "guidance" and field is not None:
            field.widget.attrs.update(rows=2, cols=60)
        return field

    def _in_use(self, objective: SafetyObjective | None) -> bool:
        return objective is not None and objective.campaign_set.exists()

    def get_readonly_fields(self, request: HttpRequest, obj: SafetyObjective | None = None) -> Any:
        # Judgments store the slug: renaming it under a campaign would orphan them.
        return ["slug"] if self._in_use(obj) else []

    def get_prepopulated_fields(self, request: HttpRequest, obj: SafetyObjective | None = None) -> Any:
        return {} if self._in_use(obj) else self.prepopulated_fields

    def has_delete_permission(self, request: HttpRequest, obj: SafetyObjective | None = None) -> bool:
        # An objective that campaigns rate is retired with "active", not deleted.
        return super().has_delete_permission(request, obj) and not self._in_use(obj)


# --- campaigns --------------------------------------------------------------------------------


class CampaignCreateForm(forms.Form):
    """A new campaign: its kind, and the dialogs whose model turns become its items."""

    name = forms.CharField(max_length=Campaign._meta.get_field("name").max_length)
    # The human baseline and side-by-side kinds are made from an evaluation set's page.
    kind = forms.ChoiceField(
        choices=[c for c in Campaign.Kind.choices if c[0] not in campaigns.EVALUATION_ONLY_KINDS]
    )
    purpose = forms.ChoiceField(choices=[("", "Any"), *Dialog.Purpose.choices], required=False)
    role = forms.ModelChoiceField(Role.objects.all(), to_field_name="slug", required=False, empty_label="Any")
    model_version = forms.CharField(
        required=False, help_text="Only the model turns this model version wrote (each turn names its own)."
    )
    created_from = forms.DateField(
        required=False, label="Dialogs from", widget=forms.DateInput(attrs={"type": "date"})
    )
    created_to = forms.DateField(
        required=False,
        label="Dialogs to",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Included.",
    )
    raters_per_item = forms.IntegerField(
        min_value=1,
        max_value=50,
        required=False,
        help_text="Blank: 5 for SSI, 3 for the other kinds (the paper's numbers).",
    )
    objectives = forms.ModelMultipleChoiceField(
        SafetyObjective.objects.all(),
        to_field_name="slug",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Safety campaigns only. None chosen: every active objective.",
    )
    instructions = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    include_fallback = forms.BooleanField(
        required=False,
        label="Include fallback replies",
        help_text="Also rate the turns where the safe fallback reply was sent because every candidate "
        "was predicted unsafe (left out by default: they are not the model's text).",
    )
    empty = forms.BooleanField(
        required=False, label="No items", help_text="Create the campaign empty, to import judgments into."
    )
    stop_when_decided = forms.BooleanField(
        required=False,
        label="Stop asking once the answer is decided",
        help_text=Campaign._meta.get_field("stop_when_decided").help_text
        + " Off by default: the paper asks every rater. For SSI, safety, groundedness evaluation and "
        "helpfulness campaigns.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        first, last = data.get("created_from"), data.get("created_to")
        if first and last and first > last:
            self.add_error("created_to", "This is before the first day.")
        return data

    def service_kwargs(self) -> dict[str, Any]:
        """The arguments of ``campaigns.campaign_create`` (but ``created_by``)."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "kind": data["kind"],
            "filters": self.filters(),
            "raters_per_item": data["raters_per_item"],
            "objectives": [o.slug for o in data["objectives"]] or None,
            "instructions": data["instructions"],
            "empty": data["empty"],
            "stop_when_decided": data["stop_when_decided"],
        }

    def filters(self) -> campaigns.DialogFilters:
        data = self.cleaned_data
        last: date | None = data["created_to"]
        return campaigns.DialogFilters(
            purpose=data["purpose"] or None,
            role=data["role"].slug if data["role"] else None,
            model_version=data["model_version"] or None,
            created_from=_start_of(data["created_from"]) if data["created_from"] else None,
            created_to=_start_of(last + timedelta(days=1)) if last else None,
            include_fallback=data["include_fallback"],
        )


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


@admin.register(Campaign)
class CampaignAdmin(ServiceAddMixin, admin.ModelAdmin):
    list_display = ["name", "kind", "status", "raters_per_item", "progress", "created_at"]
    list_filter = ["kind", "status"]
    search_fields = ["name"]
    date_hierarchy = "created_at"
    fields = [
        "name",
        "kind",
        "status",
        "raters_per_item",
        "stop_when_decided",
        "objective_names",
        "instructions",
        "evaluation_set_link",
        "filters",
        "gold_rate",
        "gold_min",
        "gold_threshold",
        "qualification_threshold",
        "created_by",
        "created_at",
    ]
    # What the items were made from and how many raters they wait for is fixed at creation.
    readonly_fields = [
        "kind",
        "raters_per_item",
        "stop_when_decided",
        "objective_names",
        "evaluation_set_link",
        "filters",
        "created_by",
        "created_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        normal = Q(items__kind=Item.Kind.NORMAL)
        return (
            super()
            .get_queryset(request)
            .annotate(
                item_total=Count("items", filter=normal),
                item_complete=Count("items", filter=normal & item_complete("items__", "raters_per_item")),
            )
        )

    @admin.display(description="progress (items complete)")
    def progress(self, campaign: Campaign) -> str:
        return progress_bar(campaign.item_complete, campaign.item_total)

    @admin.display(description="objectives")
    def objective_names(self, campaign: Campaign) -> str:
        return ", ".join(o.name for o in campaign.objectives.all()) or "-"

    @admin.display(description="evaluation set")
    def evaluation_set_link(self, campaign: Campaign) -> str:
        if campaign.evaluation_set_id is None:
            return "-"
        url = reverse("admin:annotation_campaign_evaluation_set", args=[campaign.evaluation_set_id])
        return format_html('<a href="{}">{}</a>', url, campaign.evaluation_set)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            # Before the change page's <path:object_id>/, which would take them.
            *EvaluationSetPages(self).urls(),
            path(
                "<path:object_id>/consensus/run/",
                view(self.consensus_run_view),
                name="annotation_campaign_consensus_run",
            ),
            path(
                "<path:object_id>/consensus/progress/",
                view(self.consensus_progress_view),
                name="annotation_campaign_consensus_progress",
            ),
            path(
                "<path:object_id>/rater-model/run/",
                view(self.rater_model_run_view),
                name="annotation_campaign_rater_model_run",
            ),
            path(
                "<path:object_id>/rater-model/progress/",
                view(self.rater_model_progress_view),
                name="annotation_campaign_rater_model_progress",
            ),
            *super().get_urls(),
        ]

    # The add page: a form of filters that calls campaigns.campaign_create.
    add_form = CampaignCreateForm
    add_service = staticmethod(campaigns.campaign_create)
    add_refused = AnnotationError
    add_title = "Add campaign"
    add_submit = "Create campaign"
    add_fieldsets = [
        ("Campaign", "", ["name", "kind", "raters_per_item", "stop_when_decided", "instructions"]),
        (
            "Items: the model turns of these dialogs",
            "A blank filter takes every dialog.",
            ["purpose", "role", "model_version", "created_from", "created_to", "include_fallback", "empty"],
        ),
        ("Safety", "", ["objectives"]),
    ]

    def added_message(self, campaign: Campaign) -> str:
        return f"Campaign “{campaign}” created with {campaign.items.count()} items."

    # The change page: agreement, workers, the latest consensus run and its buttons.

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        campaign = self.get_object(request, unquote(object_id))
        if campaign is not None and self.has_view_or_change_permission(request, campaign):
            workers, worker_total = agreement.campaign_workers(campaign=campaign)
            raters = agreement.campaign_rater_estimates(
                campaign=campaign, workers=[worker.worker_id for worker in workers]
            )
            progress = selectors.campaign_progress(campaign=campaign)
            extra_context = {
                **(extra_context or {}),
                **self._run_context(request, campaign),
                **self._rater_model_context(request, campaign),
                "raters": raters,
                "worker_rows": [(worker, raters.cells(worker.worker_id)) for worker in workers],
                "progress": progress,
                "progress_bar": progress_bar(progress["complete"], progress["total"]),
                "alphas": agreement.campaign_alpha(campaign=campaign),
                "workers": workers,
                "worker_total": worker_total,
                "export_url": reverse("campaign-consensus-export", kwargs={"campaign_id": campaign.pk}),
                "blocked_url": (
                    reverse("admin:annotation_workerquality_changelist")
                    + f"?campaign__id__exact={campaign.pk}&blocked__exact=1"
                    if request.user.has_perm("annotation.view_workerquality")
                    else ""
                ),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def _run_context(self, request: HttpRequest, campaign: Campaign) -> dict[str, Any]:
        run = campaign.aggregation_runs.select_related("requested_by").first()
        return {
            "campaign": campaign,
            "run": run,
            "run_live": run is not None
            and run.status in (AggregationRun.Status.PENDING, AggregationRun.Status.RUNNING),
            "run_bar": progress_bar(run.done, run.total) if run else "",
            "can_aggregate": request.user.has_perm(AGGREGATE_PERMISSION),
            "run_url": reverse("admin:annotation_campaign_consensus_run", args=[campaign.pk]),
            "progress_url": reverse("admin:annotation_campaign_consensus_progress", args=[campaign.pk]),
            "change_url": reverse("admin:annotation_campaign_change", args=[campaign.pk]),
        }

    def _rater_model_context(self, request: HttpRequest, campaign: Campaign) -> dict[str, Any]:
        run = campaign.rater_model_runs.first()
        return {
            "campaign": campaign,
            "rater_run": run,
            "rater_run_live": run is not None
            and run.status in (RaterModelRun.Status.PENDING, RaterModelRun.Status.RUNNING),
            "rater_run_bar": progress_bar(run.done, run.total) if run else "",
            "can_run_rater_model": request.user.has_perm(RATER_MODEL_PERMISSION),
            "rater_run_url": reverse("admin:annotation_campaign_rater_model_run", args=[campaign.pk]),
            "rater_progress_url": reverse(
                "admin:annotation_campaign_rater_model_progress", args=[campaign.pk]
            ),
            "change_url": reverse("admin:annotation_campaign_change", args=[campaign.pk]),
        }

    def _visible_campaign(self, request: HttpRequest, object_id: str) -> Campaign:
        campaign = self.get_object(request, unquote(object_id))
        if campaign is None:
            raise Http404("There is no such campaign.")
        if not self.has_view_or_change_permission(request, campaign):
            raise PermissionDenied
        return campaign

    def _run_fragment(self, request: HttpRequest, campaign: Campaign) -> TemplateResponse:
        return TemplateResponse(
            request, "admin/annotation/campaign/change_form.html#run", self._run_context(request, campaign)
        )

    def consensus_progress_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The latest consensus run of a campaign, as a fragment the change page polls while it runs."""
        return self._run_fragment(request, self._visible_campaign(request, object_id))

    @method_decorator(require_POST)
    def consensus_run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Queue consensus for the whole campaign on a worker ("Compute consensus now")."""
        campaign = self._visible_campaign(request, object_id)
        if not request.user.has_perm(AGGREGATE_PERMISSION):
            raise PermissionDenied
        run = consensus.aggregation_request(campaign=campaign, requested_by=request.user)
        if getattr(request, "htmx", False):
            return self._run_fragment(request, campaign)
        self.message_user(request, f"Consensus run {run.pk} queued; its progress shows below.", messages.INFO)
        return HttpResponseRedirect(reverse("admin:annotation_campaign_change", args=[campaign.pk]))

    def _rater_model_fragment(self, request: HttpRequest, campaign: Campaign) -> TemplateResponse:
        return TemplateResponse(
            request,
            "admin/annotation/campaign/change_form.html#rater_run",
            self._rater_model_context(request, campaign),
        )

    def rater_model_progress_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The latest Dawid–Skene run of a campaign, as a fragment the change page polls while it
        runs. The poll that finds it finished reloads the page (``HX-Refresh``): the raters'
        estimates and flags it made are in the Workers table, outside the fragment."""
        response = self._rater_model_fragment(request, self._visible_campaign(request, object_id))
        if getattr(request, "htmx", False) and not response.context_data["rater_run_live"]:
            response["HX-Refresh"] = "true"
        return response

    @method_decorator(require_POST)
    def rater_model_run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Queue a Dawid–Skene aggregation of the campaign on a worker ("Aggregate with Dawid–Skene")."""
        campaign = self._visible_campaign(request, object_id)
        if not request.user.has_perm(RATER_MODEL_PERMISSION):
            raise PermissionDenied
        run = consensus.rater_aggregation_request(campaign=campaign, requested_by=request.user)
        if getattr(request, "htmx", False):
            return self._rater_model_fragment(request, campaign)
        self.message_user(
            request, f"Dawid–Skene run {run.pk} queued; its progress shows below.", messages.INFO
        )
        return HttpResponseRedirect(reverse("admin:annotation_campaign_change", args=[campaign.pk]))
