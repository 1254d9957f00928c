"""The admin pages of evaluation sets' crowd work, under the campaigns (Campaigns → Evaluation sets):
each set with its responders and campaigns, and the actions "Start human baseline", "Compare two
versions" and "Put new responses up for rating" (``annotation.services.evaluations``).

They live on annotation's side: ``dialogs`` (where evaluation sets are kept) imports nothing of
annotation; annotation reads dialogs. Reading needs the permission to view campaigns; the actions
need ``annotation.evaluate_campaign`` (admins and researchers).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from annotation import selectors
from annotation.apps import EVALUATE_PERMISSION
from annotation.errors import AnnotationError
from annotation.models import Campaign, Item, item_complete
from annotation.services import evaluations
from dialogs.models import HUMAN_RESPONDER, EvaluationSet
from groundwork.admin import progress_bar

TEMPLATES = "admin/annotation/campaign"


def responder_label(responder: str) -> str:
    return "Human baseline" if responder == HUMAN_RESPONDER else responder


class PairwiseForm(forms.Form):
    """Two of the set's responders to compare side by side."""

    responder_a = forms.ChoiceField(label="Response A from")
    responder_b = forms.ChoiceField(label="Response B from")

    def __init__(self, *args: Any, responders: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(r, responder_label(r)) for r in responders]
        self.fields["responder_a"].choices = choices
        self.fields["responder_b"].choices = choices
        if len(responders) > 1:
            self.fields["responder_b"].initial = responders[1]


class EvaluationSetPages:
    """The pages, bound to the campaign admin that serves them (its site, its permissions)."""

    def __init__(self, model_admin: ModelAdmin) -> None:
        self.model_admin = model_admin

    def urls(self) -> list[URLPattern]:
        view = self.model_admin.admin_site.admin_view
        return [
            path("evaluation-sets/", view(self.list_view), name="annotation_campaign_evaluation_sets"),
            path(
                "evaluation-sets/<int:set_id>/",
                view(self.set_view),
                name="annotation_campaign_evaluation_set",
            ),
            path(
                "evaluation-sets/<int:set_id>/human-baseline/",
                view(require_POST(self.human_baseline_view)),
                name="annotation_campaign_human_baseline",
            ),
            path(
                "evaluation-sets/<int:set_id>/compare/",
                view(require_POST(self.compare_view)),
                name="annotation_campaign_compare",
            ),
            path(
                "evaluation-sets/<int:set_id>/enqueue/",
                view(require_POST(self.enqueue_view)),
                name="annotation_campaign_enqueue",
            ),
        ]

    # --- reading ----------------------------------------------------------------------------

    def _check_view(self, request: HttpRequest) -> None:
        if not self.model_admin.has_view_permission(request):
            raise PermissionDenied

    def _check_evaluate(self, request: HttpRequest) -> None:
        if not request.user.has_perm(EVALUATE_PERMISSION):
            raise PermissionDenied

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {
            **self.model_admin.admin_site.each_context(request),
            "opts": self.model_admin.opts,
            "can_evaluate": request.user.has_perm(EVALUATE_PERMISSION),
            **extra,
        }

    def list_view(self, request: HttpRequest) -> HttpResponse:
        """Every evaluation set, newest first, with its responses and campaigns counted."""
        self._check_view(request)
        sets = EvaluationSet.objects.annotate(
            responses=Count("contexts__responses", distinct=True),
            campaign_count=Count("campaigns", distinct=True),
        ).order_by("-created_at", "-id")
        context = self._context(request, title="Evaluation sets: crowd work", sets=sets)
        return TemplateResponse(request, f"{TEMPLATES}/evaluation_sets.html", context)

    def set_view(self, request: HttpRequest, set_id: int) -> HttpResponse:
        """One set: its responders, its campaigns with their progress, and the actions."""
        self._check_view(request)
        evaluation_set = get_object_or_404(EvaluationSet, pk=set_id)
        return self._set_page(request, evaluation_set)

    def _set_page(
        self, request: HttpRequest, evaluation_set: EvaluationSet, *, form: PairwiseForm | None = None
    ) -> HttpResponse:
        answered = selectors.evaluation_responders(evaluation_set=evaluation_set)
        normal = Q(items__kind=Item.Kind.NORMAL)
        campaigns = (
            Campaign.objects.filter(evaluation_set=evaluation_set)
            .annotate(
                item_total=Count("items", filter=normal),
                item_complete=Count("items", filter=normal & item_complete("items__", "raters_per_item")),
            )
            .order_by("created_at", "id")
        )
        rows = [
            {
                "campaign": campaign,
                "url": reverse("admin:annotation_campaign_change", args=[campaign.pk]),
                "progress": progress_bar(campaign.item_complete, campaign.item_total),
                "compares": " vs ".join(
                    responder_label(campaign.filters.get(key, "")) for key in ("responder_a", "responder_b")
                )
                if campaign.kind == Campaign.Kind.PAIRWISE
                else "",
            }
            for campaign in campaigns
        ]
        context = self._context(
            request,
            title=f"Evaluation set {evaluation_set}",
            evaluation_set=evaluation_set,
            set_url=reverse("admin:dialogs_evaluationset_change", args=[evaluation_set.pk]),
            responders=[(responder_label(r), n) for r, n in answered.items()],
            campaigns=rows,
            pairwise_form=form or PairwiseForm(responders=list(answered)),
            can_compare=len(answered) >= 2,
        )
        return TemplateResponse(request, f"{TEMPLATES}/evaluation_set.html", context)

    # --- actions ----------------------------------------------------------------------------

    def _back(self, evaluation_set: EvaluationSet) -> HttpResponseRedirect:
        url = reverse("admin:annotation_campaign_evaluation_set", args=[evaluation_set.pk])
        return HttpResponseRedirect(url)

    def human_baseline_view(self, request: HttpRequest, set_id: int) -> HttpResponse:
        """Start (or add to) the set's human baseline campaign."""
        self._check_evaluate(request)
        evaluation_set = get_object_or_404(EvaluationSet, pk=set_id)
        try:
            started = evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=request.user)
        except AnnotationError as refused:
            messages.error(request, refused.message)
        else:
            messages.success(
                request, f"Human baseline “{started.campaign}”: {started.added} context(s) added to write."
            )
        return self._back(evaluation_set)

    def compare_view(self, request: HttpRequest, set_id: int) -> HttpResponse:
        """Compare two responders side by side (a pairwise campaign)."""
        self._check_evaluate(request)
        evaluation_set = get_object_or_404(EvaluationSet, pk=set_id)
        answered = list(selectors.evaluation_responders(evaluation_set=evaluation_set))
        form = PairwiseForm(request.POST, responders=answered)
        if not form.is_valid():
            return self._set_page(request, evaluation_set, form=form)
        try:
            made = evaluations.pairwise_campaign_create(
                evaluation_set=evaluation_set,
                responder_a=form.cleaned_data["responder_a"],
                responder_b=form.cleaned_data["responder_b"],
                created_by=request.user,
            )
        except AnnotationError as refused:
            form.add_error(None, refused.message)
            return self._set_page(request, evaluation_set, form=form)
        messages.success(request, f"Side by side “{made.campaign}”: {made.added} pair(s) added to compare.")
        return self._back(evaluation_set)

    def enqueue_view(self, request: HttpRequest, set_id: int) -> HttpResponse:
        """Put the set's responses that are in no item yet up for blind rating."""
        self._check_evaluate(request)
        evaluation_set = get_object_or_404(EvaluationSet, pk=set_id)
        added = evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)
        if added:
            done = "; ".join(f"{entry.added} to “{entry.campaign}”" for entry in added)
            messages.success(request, f"Responses put up for rating: {done}.")
        else:
            messages.info(request, "Every response of this set is up for rating already.")
        return self._back(evaluation_set)
