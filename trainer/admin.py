"""The trainer admin: dataset versions, training jobs, model versions.

Admins may watch; only researchers trigger. Everyone with the view permissions reads the lists
and the pages (progress polled with htmx, the loss curve, metrics, lineage, downloads); exporting
needs ``trainer.export_datasetversion``, retraining and cancelling ``trainer.run_trainingjob``,
choosing the serving model ``trainer.serve_modelversion``. No row is edited or deleted here:
every write goes through ``trainer.services.requests``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import OuterRef, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from dialogs.models import Turn
from dialogs.selectors import turn_count
from groundwork.admin import progress_bar
from trainer import evaluation_admin, selectors
from trainer.admin_base import TrainerAdmin
from trainer.charts import finite, loss_curve, metrics_table, percent, size_facts
from trainer.forms import DatasetExportForm, ModelImportForm, TrainingJobForm
from trainer.models import DatasetVersion, Evaluation, ModelVersion, TrainingJob
from trainer.services import model_imports, requests

EXPORT_PERMISSION = "trainer.export_datasetversion"
RUN_PERMISSION = "trainer.run_trainingjob"
SERVE_PERMISSION = "trainer.serve_modelversion"
IMPORT_PERMISSION = "trainer.add_modelversion"

DATASET_FILES = ("manifest.json", "train.jsonl", "validation.jsonl", "train.parquet", "validation.parquet")


def _link(url: str, text: Any) -> str:
    return format_html('<a href="{}">{}</a>', url, text)


# --- dataset versions ---------------------------------------------------------------------------


@admin.register(DatasetVersion)
class DatasetVersionAdmin(TrainerAdmin):
    add_permission = EXPORT_PERMISSION
    add_label = "Export dataset"
    list_display = [
        "id",
        "kind",
        "status",
        "progress",
        "campaign_names",
        "sha256_short",
        "created_by",
        "created_at",
    ]
    list_display_links = ["id", "kind"]
    list_filter = ["kind", "status"]
    list_select_related = ["created_by"]
    date_hierarchy = "created_at"
    fields = [
        "kind",
        "campaigns",
        "tokenizer_source",
        "filters",
        "validation_percent",
        "directory",
        "sha256",
        "tokenizer_sha256",
        "created_by",
        "created_at",
        "finished_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[DatasetVersion]:
        return super().get_queryset(request).prefetch_related("campaigns")

    @admin.display(description="progress (sources)")
    def progress(self, dataset: DatasetVersion) -> str:
        return progress_bar(dataset.done, dataset.total)

    @admin.display(description="campaigns")
    def campaign_names(self, dataset: DatasetVersion) -> str:
        return ", ".join(c.name for c in dataset.campaigns.all()) or "-"

    @admin.display(description="sha256")
    def sha256_short(self, dataset: DatasetVersion) -> str:
        return dataset.sha256[:12] or "-"

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/progress/",
                view(self.progress_view),
                name="trainer_datasetversion_progress",
            ),
            path(
                "<path:object_id>/download/<str:name>/",
                view(self.download_view),
                name="trainer_datasetversion_download",
            ),
            *super().get_urls(),
        ]

    # The add page: "Export dataset", calling requests.dataset_request.
    add_form = DatasetExportForm
    add_service = staticmethod(requests.dataset_request)
    added_noun = "Dataset"
    add_title = add_submit = "Export dataset"
    add_fieldsets = [
        ("Dataset", "", ["kind", "campaigns", "purposes", "model_versions"]),
        ("Rendering", "", ["tokenizer_source", "validation_percent"]),
        (
            "Filtering",
            "Filtered datasets only: the dialogs' turns that the discriminators of the "
            "tokenizer's model rate at or above every threshold are kept.",
            [f"threshold_{name}" for name in DatasetExportForm.THRESHOLDS],
        ),
    ]

    # The change page: status polled while it builds, counts, files and manifest once ready.

    def page_context(self, request: HttpRequest, dataset: DatasetVersion) -> dict[str, Any]:
        ready = dataset.status == DatasetVersion.Status.READY
        counts = dataset.counts or {}
        splits: dict[str, dict[str, int]] = counts.get("splits") or {}
        kinds = sorted({kind for per_kind in splits.values() for kind in per_kind})
        balance = [
            {"attribute": attribute, "zero": sides.get("0", 0), "one": sides.get("1", 0)}
            for attribute, sides in sorted((counts.get("label_balance") or {}).items())
        ]
        order = {name: i for i, name in enumerate(DATASET_FILES)}
        files = [
            {
                "name": name,
                "url": self._url("download", dataset.pk, name),
                "bytes": info.get("bytes"),
                "rows": info.get("rows"),
                "sha256": info.get("sha256", ""),
            }
            for name, info in sorted((dataset.files or {}).items(), key=lambda f: (order.get(f[0], 99), f[0]))
        ]
        return {
            "dataset": dataset,
            "live": dataset.status in (DatasetVersion.Status.PENDING, DatasetVersion.Status.RUNNING),
            "bar": progress_bar(dataset.done, dataset.total),
            "progress_url": self._url("progress", dataset.pk),
            "change_url": self._url("change", dataset.pk),
            "split_names": list(splits),
            "split_rows": [(kind, [splits[split].get(kind, 0) for split in splits]) for kind in kinds],
            "split_totals": [sum(per_kind.values()) for per_kind in splits.values()],
            "balance": balance,
            "skipped": counts.get("skipped") or {},
            "files": files if ready else [],
            "manifest": self._manifest(dataset) if ready else "",
        }

    def _manifest(self, dataset: DatasetVersion) -> str:
        try:
            text = requests.dataset_file(dataset, "manifest.json").read_text(encoding="utf-8")
            return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
        except (requests.TrainerError, OSError, ValueError):
            return ""

    def progress_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The dataset's status panel, as a fragment the change page polls while it builds."""
        return self._panel(request, self._visible(request, object_id))

    def download_view(self, request: HttpRequest, object_id: str, name: str) -> FileResponse:
        """One file of a ready dataset, as an attachment."""
        dataset = self._visible(request, object_id)
        try:
            file_path = requests.dataset_file(dataset, name)
            handle = file_path.open("rb")
        except (requests.TrainerError, OSError) as exc:
            raise Http404(str(exc)) from None
        return FileResponse(handle, as_attachment=True, filename=f"dataset-{dataset.pk}-{name}")


# --- training jobs ------------------------------------------------------------------------------


@admin.register(TrainingJob)
class TrainingJobAdmin(TrainerAdmin):
    add_permission = RUN_PERMISSION
    add_label = "Retrain"
    list_display = [
        "id",
        "kind",
        "status",
        "progress",
        "loss_value",
        "base_model",
        "model_version_link",
        "created_by",
        "created_at",
    ]
    list_display_links = ["id", "kind"]
    list_filter = ["kind", "status"]
    list_select_related = ["base_model", "model_version", "created_by"]
    date_hierarchy = "created_at"
    fields = [
        "kind",
        "base_model",
        "datasets",
        "hyperparameters",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    ]

    @admin.display(description="progress (steps)")
    def progress(self, job: TrainingJob) -> str:
        return progress_bar(job.step, job.total_steps)

    @admin.display(description="loss", ordering="loss")
    def loss_value(self, job: TrainingJob) -> str:
        return "-" if job.loss is None else f"{job.loss:.4f}"

    @admin.display(description="model version")
    def model_version_link(self, job: TrainingJob) -> str:
        version = _model_version_of(job)
        if version is None:
            return "-"
        return _link(reverse("admin:trainer_modelversion_change", args=[version.pk]), version.name)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/progress/", view(self.progress_view), name="trainer_trainingjob_progress"),
            path("<path:object_id>/cancel/", view(self.cancel_view), name="trainer_trainingjob_cancel"),
            *super().get_urls(),
        ]

    # The add page: "Retrain", calling requests.training_request.
    add_service = staticmethod(requests.training_request)
    added_noun = "Training job"
    add_title = "Retrain"
    add_submit = "Start training"
    add_fieldsets = [
        ("Job", "", ["kind", "base_model", "datasets", "preset"]),
        (
            "Hyperparameters",
            "",
            ["steps", "learning_rate", "batch_size", "checkpoint_every", "seed", "qs_mix_share", "dpo_beta"],
        ),
    ]

    def get_add_form(self, request: HttpRequest) -> TrainingJobForm:
        # "Retrain from this version" links here with ?base_model=<pk>.
        return TrainingJobForm(request.POST or None, initial={"base_model": request.GET.get("base_model")})

    # The job page: progress, loss curve, metrics, log, polled while the job runs.

    def page_context(self, request: HttpRequest, job: TrainingJob, notice: str = "") -> dict[str, Any]:
        version = _model_version_of(job)
        return {
            "job": job,
            "live": not job.finished,
            "curve": loss_curve(job.history),
            "metrics": metrics_table(job.metrics),
            "size": size_facts(
                selectors.job_size(job),
                latest=job.tokens_per_second,
                average=getattr(job, "average_tokens_per_second", None),
            ),
            "model_version": version,
            "model_version_url": (
                reverse("admin:trainer_modelversion_change", args=[version.pk]) if version else ""
            ),
            "can_run": request.user.has_perm(RUN_PERMISSION),
            "progress_url": self._url("progress", job.pk),
            "cancel_url": self._url("cancel", job.pk),
            "change_url": self._url("change", job.pk),
            "notice": notice,
        }

    def progress_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The job's progress panel, as a fragment the job page polls while it is queued or runs."""
        return self._panel(request, self._visible(request, object_id))

    @method_decorator(require_POST)
    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Cancel the job (requests.training_cancel): at once when queued, soon when running."""
        self._require(request, RUN_PERMISSION)
        job = self._visible(request, object_id)
        try:
            job = requests.training_cancel(job=job, by=request.user)
        except requests.TrainerError as exc:
            notice, level = str(exc), messages.WARNING
        else:
            notice = (
                f"Training job {job.pk} cancelled."
                if job.status == TrainingJob.Status.CANCELLED
                else f"Cancel requested: training job {job.pk} stops at its next progress report."
            )
            level = messages.SUCCESS
        if getattr(request, "htmx", False):
            return self._panel(request, job, notice=notice)
        self.message_user(request, notice, level)
        return HttpResponseRedirect(self._url("change", job.pk))


def _model_version_of(job: TrainingJob) -> ModelVersion | None:
    try:
        return job.model_version
    except ObjectDoesNotExist:
        return None


# --- model versions -----------------------------------------------------------------------------


@admin.register(ModelVersion)
class ModelVersionAdmin(TrainerAdmin):
    # The add page imports a base model of the lab's own from a folder (model_imports.model_import).
    add_permission = IMPORT_PERMISSION
    add_label = "Import a model"
    add_form = ModelImportForm
    add_service = staticmethod(model_imports.model_import)
    add_title = "Import a transformers causal language model"
    add_submit = "Import"
    add_fieldsets = [("Model", "", ["folder", "name"])]
    list_display = [
        "name",
        "kind",
        "serving",
        "parent",
        "job_link",
        "parameters",
        "validation_loss",
        "hits_at_1",
        "chat_answers",
        "fallback_replies",
        "created_at",
    ]
    list_filter = ["serving", "kind"]
    list_select_related = ["parent", "job"]
    search_fields = ["name"]
    date_hierarchy = "created_at"
    actions = ["serve_selected"]
    fields = [
        "name",
        "kind",
        "source",
        "serving",
        "parent",
        "job",
        "directory",
        "config",
        "parameters",
        "device",
        "precision",
        "tokenizer_sha256",
        "created_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelVersion]:
        # Chat answers are the model turns credited to the version (Turn.model_version); fallback
        # replies those where every candidate was predicted unsafe and none was sent.
        return (
            super()
            .get_queryset(request)
            .select_related("parent", "job")
            .annotate(
                answer_count=turn_count(model_version=OuterRef("name")),
                fallback_count=turn_count(model_version=OuterRef("name"), fallback=Turn.Fallback.UNSAFE),
            )
        )

    @admin.display(description="chat answers")
    def chat_answers(self, version: ModelVersion) -> int:
        return getattr(version, "answer_count", 0)

    @admin.display(description="fallback replies (all unsafe)")
    def fallback_replies(self, version: ModelVersion) -> int:
        return getattr(version, "fallback_count", 0)

    @admin.display(description="job")
    def job_link(self, version: ModelVersion) -> str:
        if version.job_id is None:
            return "-"
        return _link(reverse("admin:trainer_trainingjob_change", args=[version.job_id]), version.job_id)

    @admin.display(description="validation loss")
    def validation_loss(self, version: ModelVersion) -> str:
        loss = ((version.metrics or {}).get("final") or {}).get("validation_loss")
        return f"{loss:.4f}" if finite(loss) else "-"

    def added_message(self, obj: ModelVersion) -> str:
        return f"Model version {obj.name} imported from {obj.source}."

    @admin.display(description="Hits@1 (held-out turns)")
    def hits_at_1(self, version: ModelVersion) -> str:
        return percent(((version.metrics or {}).get("final") or {}).get("hits_at_1")) or "-"

    def has_serve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SERVE_PERMISSION)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/serve/", view(self.serve_view), name="trainer_modelversion_serve"),
            *super().get_urls(),
        ]

    def page_context(self, request: HttpRequest, version: ModelVersion) -> dict[str, Any]:
        return {
            "version": version,
            "lineage": self._lineage(request, version),
            "metrics": metrics_table(version.metrics),
            "can_serve": self.has_serve_permission(request),
            "retrain_url": (
                f"{reverse('admin:trainer_trainingjob_add')}?base_model={version.pk}"
                if request.user.has_perm(RUN_PERMISSION)
                else ""
            ),
            "serve_url": self._url("serve", version.pk),
            "answers": self._answers(request, version),
            "evaluations": self._evaluations(version),
            "evaluate": evaluation_admin.evaluate_form(request, version),
        }

    def _evaluations(self, version: ModelVersion) -> list[dict[str, Any]]:
        """The evaluation sets the version was evaluated on (one query), each with its page, its
        progress, its Hits@1 and its report."""
        return [
            {
                "evaluation": evaluation,
                "url": reverse("admin:trainer_evaluation_change", args=[evaluation.pk]),
                "bar": progress_bar(evaluation.done, evaluation.total),
                "hits": evaluation_admin.number((evaluation.metrics or {}).get("hits_at_1")),
                "report_url": reverse("evaluation-report", args=[evaluation.evaluation_set_id]),
            }
            for evaluation in Evaluation.objects.filter(model_version=version)
            .select_related("evaluation_set")
            .order_by("-created_at", "-id")
        ]

    def _answers(self, request: HttpRequest, version: ModelVersion) -> dict[str, Any]:
        """How often the version answered in chats, and how often with the safe fallback reply."""
        turns = (
            f"{reverse('admin:dialogs_turn_changelist')}?{urlencode({'model_version': version.name})}"
            if request.user.has_perm("dialogs.view_turn")
            else ""
        )
        return {
            "turns": getattr(version, "answer_count", 0),
            "fallbacks": getattr(version, "fallback_count", 0),
            "turns_url": turns,
            "fallbacks_url": f"{turns}&fallback__exact={Turn.Fallback.UNSAFE}" if turns else "",
        }

    def _lineage(self, request: HttpRequest, version: ModelVersion) -> list[dict[str, Any]]:
        """The version and its ancestors up to the root, each with its job, datasets and campaigns."""
        show_campaigns = request.user.has_perm("annotation.view_campaign")
        return [
            {
                "version": current,
                "url": self._url("change", current.pk),
                "job": current.job,
                "job_url": reverse("admin:trainer_trainingjob_change", args=[current.job_id])
                if current.job_id
                else "",
                "datasets": [
                    {
                        "dataset": dataset,
                        "url": reverse("admin:trainer_datasetversion_change", args=[dataset.pk]),
                        # Only the turns these model versions wrote, when the dataset was filtered so.
                        "model_versions": ", ".join((dataset.filters or {}).get("model_versions") or []),
                        "campaigns": format_html_join(
                            ", ",
                            '<a href="{}">{}</a>' if show_campaigns else "{1}",
                            (
                                (reverse("admin:annotation_campaign_change", args=[c.pk]), c.name)
                                for c in dataset.campaigns.all()
                            ),
                        ),
                    }
                    for dataset in (current.job.datasets.all() if current.job_id else [])
                ],
            }
            for current in selectors.lineage(version)
        ]

    @method_decorator(require_POST)
    def serve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Make this version the serving one (requests.model_serve)."""
        self._require(request, SERVE_PERMISSION)
        version = self._visible(request, object_id)
        version = requests.model_serve(model=version)
        self.message_user(request, f"{version.name} serves now.", messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", version.pk))

    @admin.action(description="Serve this version", permissions=["serve"])
    def serve_selected(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        versions = list(queryset[:2])
        if len(versions) != 1:
            self.message_user(request, "Choose exactly one model version to serve.", messages.WARNING)
            return
        version = requests.model_serve(model=versions[0])
        self.message_user(request, f"{version.name} serves now.", messages.SUCCESS)
