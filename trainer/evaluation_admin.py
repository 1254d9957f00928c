"""The admin of evaluations: a model version answering an evaluation set.

Researchers start one ("Evaluate": the list's add page, or the form on a model version's page,
``trainer.add_evaluation``); admins and researchers watch them (the list with a progress bar, the
page polled with htmx while it runs, then its metrics). Registered by ``trainer.admin``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse

from dialogs.models import EvaluationSet
from groundwork.admin import progress_bar
from trainer.admin_base import TrainerAdmin
from trainer.charts import finite
from trainer.forms import EvaluationForm
from trainer.models import Evaluation, ModelVersion
from trainer.services import evaluations, requests

EVALUATE_PERMISSION = "trainer.add_evaluation"


def _request(*, evaluation_set: EvaluationSet, model_version: ModelVersion, created_by: Any) -> Evaluation:
    return evaluations.evaluation_request(
        evaluation_set=evaluation_set, model_version=model_version, requested_by=created_by
    )


def number(value: Any, places: int = 3) -> str:
    """A metric as the pages show it: ``places`` decimals, ``-`` when there is none."""
    return f"{value:.{places}f}" if finite(value) else "-"


@admin.register(Evaluation)
class EvaluationAdmin(TrainerAdmin):
    add_permission = EVALUATE_PERMISSION
    add_label = "Evaluate a model version"
    list_display = [
        "id",
        "model_version",
        "evaluation_set",
        "status",
        "progress",
        "hits",
        "fallbacks",
        "requested_by",
        "created_at",
    ]
    list_display_links = ["id", "model_version"]
    list_filter = ["status", "evaluation_set", "model_version"]
    list_select_related = ["evaluation_set", "model_version", "requested_by"]
    date_hierarchy = "created_at"
    fields = ["evaluation_set", "model_version", "requested_by", "created_at", "finished_at"]

    @admin.display(description="progress (contexts)")
    def progress(self, evaluation: Evaluation) -> str:
        return progress_bar(evaluation.done, evaluation.total)

    @admin.display(description="Hits@1")
    def hits(self, evaluation: Evaluation) -> str:
        return number((evaluation.metrics or {}).get("hits_at_1"))

    @admin.display(description="fallback replies")
    def fallbacks(self, evaluation: Evaluation) -> str:
        value = (evaluation.metrics or {}).get("fallbacks")
        return "-" if value is None else str(value)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/progress/", view(self.progress_view), name="trainer_evaluation_progress"),
            *super().get_urls(),
        ]

    # The add page: "Evaluate a model version", calling evaluations.evaluation_request.
    add_form = EvaluationForm
    add_service = staticmethod(_request)
    add_refused = requests.TrainerError
    add_title = add_submit = "Evaluate"
    add_fieldsets = [("Evaluation", "", ["model_version", "evaluation_set"])]

    def added_message(self, obj: Evaluation) -> str:
        return f"Evaluation {obj.pk} ({obj.get_status_display().lower()}): {obj}; its progress shows below."

    def get_add_form(self, request: HttpRequest) -> EvaluationForm:
        # A model version's page links here with ?model_version=<pk>.
        initial = {"model_version": request.GET.get("model_version")}
        return EvaluationForm(request.POST or None, initial=initial)

    # The page: status and progress polled while it runs, then the metrics.

    def page_context(self, request: HttpRequest, evaluation: Evaluation) -> dict[str, Any]:
        metrics = evaluation.metrics or {}
        version_url = reverse("admin:trainer_modelversion_change", args=[evaluation.model_version_id])
        means = sorted((metrics.get("discriminators") or {}).items())
        return {
            "evaluation": evaluation,
            "live": evaluation.status in (Evaluation.Status.PENDING, Evaluation.Status.RUNNING),
            "bar": progress_bar(evaluation.done, evaluation.total),
            "progress_url": self._url("progress", evaluation.pk),
            "change_url": self._url("change", evaluation.pk),
            "model_version_url": version_url,
            "set_url": (
                reverse("admin:dialogs_evaluationset_change", args=[evaluation.evaluation_set_id])
                if request.user.has_perm("dialogs.view_evaluationset")
                else ""
            ),
            "discriminators": [(name, number(value)) for name, value in means],
            "figures": [
                ("Hits@1", number(metrics.get("hits_at_1"))),
                ("candidates per context", metrics.get("hits_candidates", "-")),
                ("contexts with a reference", metrics.get("hits_contexts", "-")),
                ("validation loss", number(metrics.get("validation_loss"), 4)),
                ("contexts per second", number(metrics.get("contexts_per_second"), 2)),
                ("fallback replies", metrics.get("fallbacks", "-")),
            ]
            if metrics
            else [],
        }

    def progress_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The evaluation's panel, as a fragment the page polls while it runs."""
        return self._panel(request, self._visible(request, object_id))


def evaluate_form(request: HttpRequest, version: ModelVersion) -> dict[str, Any]:
    """The "Evaluate" form of a model version's page, for those who may evaluate (else none)."""
    if not request.user.has_perm(EVALUATE_PERMISSION):
        return {"form": None, "add_url": ""}
    return {
        "form": EvaluationForm(initial={"model_version": version.pk}),
        "add_url": reverse("admin:trainer_evaluation_add"),
    }
