"""What the web process asks of the trainer: datasets and training jobs (checked, stored and
queued after commit), cancelling a job, the serving model, a dataset's files.

Imports no training library (torch, transformers, pyarrow), even indirectly: the work itself is
done by ``trainer.services.dataset_builds`` and ``trainer.services.training_jobs`` in Celery workers,
reached by task name, and the admin and the API watch it through the rows' progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from annotation.models import Campaign
from groundwork import queueing
from groundwork.errors import DomainError
from trainer import preference_sources, selectors, sources
from trainer.hyperparameters import (
    MODEL_KEYS,
    MODEL_SIZE_BOUNDS,
    VOCAB_SIZE_BOUNDS,
    HyperparameterError,
    Hyperparameters,
    model_sizes_resolve,
)
from trainer.models import DatasetVersion, ModelVersion, TrainingJob

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class TrainerError(DomainError):
    """A request the trainer refuses; the message says why, for the person who asked, and
    ``field`` names the request's field at fault when one is (``hyperparameters``): the API
    answers 400 ``{field: [message]}``, else ``{"detail": message}``."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def body(self) -> dict[str, Any]:
        return {self.field: [self.message]} if self.field else super().body()


class DatasetFileNotFound(TrainerError):
    """A dataset that is not ready, or has no such file (404)."""

    status = 404


class JobEnded(TrainerError):
    """The job has already ended: nothing to cancel (409)."""

    status = 409


# --- datasets -----------------------------------------------------------------------------------

DATASET_CAMPAIGN_KINDS: dict[str, tuple[str, ...]] = {
    DatasetVersion.Kind.PRETRAIN: (),
    DatasetVersion.Kind.QUALITY_SAFETY: sources.QUALITY_SAFETY_CAMPAIGNS,
    DatasetVersion.Kind.GROUNDEDNESS: sources.GROUNDEDNESS_CAMPAIGNS,
    DatasetVersion.Kind.FILTERED: (),
    DatasetVersion.Kind.PREFERENCE: preference_sources.PREFERENCE_CAMPAIGNS,
}
FROM_DIALOGS = (DatasetVersion.Kind.PRETRAIN, DatasetVersion.Kind.FILTERED)
MAX_DOCUMENTS = 10_000_000  # documents a pretrain dataset may name (filters.documents)
# METHOD.md §6: pre-training turns are kept when safe, sensible, specific and interesting enough.
DEFAULT_THRESHOLDS = {"safe": 0.5, "sensible": 0.5, "specific": 0.5, "interesting": 0.5}


@transaction.atomic
def dataset_request(
    *,
    kind: str,
    campaigns: Sequence[Campaign] = (),
    tokenizer_source: ModelVersion | None = None,
    purposes: Sequence[str] = (),
    model_versions: Sequence[str] = (),
    validation_percent: int = 10,
    vocab_size: int = 8192,
    thresholds: dict[str, float] | None = None,
    documents: int | None = 0,
    created_by: User | None = None,
    enqueue: bool = True,
) -> DatasetVersion:
    """Queue the export of a dataset; a worker builds it (``dataset_builds.dataset_build``).

    ``tokenizer_source`` is the model version whose tokenizer renders the examples (default: the
    serving model). A ``pretrain`` dataset without one trains a tokenizer on its dialogs. A
    ``filtered`` dataset scores every turn of the dialogs (``purposes``) with that model's
    discriminators and keeps those at or above every one of ``thresholds`` (safe, sensible,
    specific, interesting; default 0.5 each). ``model_versions`` (``pretrain`` and ``filtered``)
    keeps only the model turns those versions wrote as examples (each turn names its writer).
    ``documents`` (``pretrain`` only): how many documents of the toolset's search corpus join the
    dialogs as ``document`` examples (``sources.pretrain_documents``; 0 none, None all).
    """
    if kind not in DatasetVersion.Kind.values:
        raise TrainerError(f"kind must be one of {', '.join(DatasetVersion.Kind.values)}, not {kind!r}")
    if not 0 <= validation_percent <= 50:
        raise TrainerError("validation_percent must be between 0 and 50", field="validation_percent")
    least, most = VOCAB_SIZE_BOUNDS
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not least <= vocab_size <= most:
        raise TrainerError(
            f"vocab_size must be between {least} and {most}, got {vocab_size!r}", field="vocab_size"
        )
    allowed = DATASET_CAMPAIGN_KINDS[kind]
    campaigns = list(campaigns)
    if kind in FROM_DIALOGS:
        if campaigns:
            raise TrainerError(f"a {kind} dataset is made from dialogs, not campaigns: leave campaigns empty")
    else:
        if not campaigns:
            raise TrainerError(f"choose at least one campaign of kind {Campaign.kinds_in_words(allowed)}")
        wrong = [c.name for c in campaigns if c.kind not in allowed]
        if wrong:
            raise TrainerError(
                f"a {kind} dataset takes campaigns of kind {Campaign.kinds_in_words(allowed)}; "
                f"not: {', '.join(wrong)}"
            )
    if kind != DatasetVersion.Kind.PRETRAIN:
        tokenizer_source = tokenizer_source or selectors.serving_model()
        if tokenizer_source is None:
            raise TrainerError("there is no model version yet, so no tokenizer: train the first model first")
    filters: dict[str, Any] = {"purposes": list(purposes), "vocab_size": vocab_size}
    model_versions = sorted({name.strip() for name in model_versions if name.strip()})
    if model_versions:
        if kind not in FROM_DIALOGS:
            raise TrainerError(
                f"a {kind} dataset takes its turns from its campaigns: filter the campaigns by model "
                "version instead",
                field="model_versions",
            )
        filters["model_versions"] = model_versions
    if documents != 0:
        if (
            isinstance(documents, bool)
            or not (documents is None or isinstance(documents, int))
            or (documents is not None and not 0 <= documents <= MAX_DOCUMENTS)
        ):
            raise TrainerError(
                f"documents must be a number of documents between 0 and {MAX_DOCUMENTS}, or null for all; "
                f"got {documents!r}",
                field="documents",
            )
        if kind != DatasetVersion.Kind.PRETRAIN or model_versions:
            raise TrainerError(
                "documents join a pretrain dataset of all dialogs only, not a "
                + (
                    f"{kind} dataset"
                    if kind != DatasetVersion.Kind.PRETRAIN
                    else "dataset of model versions' turns"
                ),
                field="documents",
            )
        filters["documents"] = documents
    if kind == DatasetVersion.Kind.FILTERED:
        assert tokenizer_source is not None
        if TrainingJob.Kind.FINETUNE_QUALITY_SAFETY not in selectors.lineage_kinds(tokenizer_source):
            raise TrainerError(
                f"{tokenizer_source.name} has no discriminators yet: filtering needs a model fine-tuned "
                "for quality and safety (a finetune_quality_safety job in its lineage)"
            )
        chosen = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        unknown = sorted(set(chosen) - set(DEFAULT_THRESHOLDS))
        if unknown:
            raise TrainerError(
                f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_THRESHOLDS)}"
            )
        if not all(isinstance(v, int | float) and 0 <= v <= 1 for v in chosen.values()):
            raise TrainerError("thresholds are probabilities between 0 and 1")
        filters["thresholds"] = chosen
    dataset = DatasetVersion.objects.create(
        kind=kind,
        tokenizer_source=tokenizer_source,
        filters=filters,
        validation_percent=validation_percent,
        created_by=created_by,
    )
    dataset.campaigns.set(campaigns)
    if enqueue:
        # If the broker cannot take it, the request leaves no dataset behind (a 503).
        dataset_enqueue(dataset, undo=DatasetVersion.objects.filter(pk=dataset.pk).delete)
    return dataset


def dataset_enqueue(dataset: DatasetVersion, *, undo: Callable[[], Any] | None = None) -> None:
    """Queue the build of ``dataset`` after commit (``trainer.tasks.dataset_build_task``)."""
    queueing.enqueue("trainer.tasks.dataset_build_task", dataset.pk, undo=undo)


def dataset_file(dataset: DatasetVersion, name: str) -> Path:
    """The path of one downloadable file of a ready dataset (``DatasetFileNotFound`` for anything
    else)."""
    if dataset.status != DatasetVersion.Status.READY:
        raise DatasetFileNotFound(f"dataset {dataset.pk} is {dataset.status}, not ready")
    if name not in dataset.files:
        raise DatasetFileNotFound(
            f"dataset {dataset.pk} has no file {name!r}; it has {', '.join(sorted(dataset.files))}"
        )
    return dataset.path / name


# --- training jobs ------------------------------------------------------------------------------

# What each job trains on: FT quality-safety is the discriminators plus generation on filtered data.
JOB_DATASET_KINDS = {
    TrainingJob.Kind.PRETRAIN: (DatasetVersion.Kind.PRETRAIN,),
    TrainingJob.Kind.FINETUNE_QUALITY_SAFETY: (
        DatasetVersion.Kind.QUALITY_SAFETY,
        DatasetVersion.Kind.FILTERED,
    ),
    TrainingJob.Kind.FINETUNE_GROUNDEDNESS: (DatasetVersion.Kind.GROUNDEDNESS,),
    TrainingJob.Kind.FINETUNE_PREFERENCE: (DatasetVersion.Kind.PREFERENCE,),
}
MODEL_SIZE_FIELDS = tuple(MODEL_SIZE_BOUNDS)  # d_model, n_layer, n_head, d_ff


def hyperparameters_split(kind: str, hyperparameters: dict[str, Any]) -> tuple[Hyperparameters, dict]:
    """A job's hyperparameters checked against their bounds: the training ones, and what a pretrain
    job (only) stores of its model's size, ``preset`` and ``model`` (``model_sizes_resolve``: a
    preset's sizes, each one ``model`` names replacing the preset's); ``TrainerError`` naming the
    field otherwise."""
    data = dict(hyperparameters or {})
    size_keys = {key: data.pop(key) for key in MODEL_KEYS if key in data}
    if any(value not in (None, "", {}) for value in size_keys.values()) and kind != TrainingJob.Kind.PRETRAIN:
        raise TrainerError(
            "model sizes (hyperparameters.preset and hyperparameters.model) are for pretrain jobs; "
            "a fine-tune keeps its base model's",
            field="hyperparameters",
        )
    try:
        hp = Hyperparameters.from_dict(data)
        sizes = model_sizes_resolve(**size_keys)
    except HyperparameterError as exc:
        raise TrainerError(str(exc), field="hyperparameters") from None
    if kind == TrainingJob.Kind.FINETUNE_PREFERENCE and hp.world_size > 1:
        raise TrainerError(
            "hyperparameter world_size: a finetune_preference (DPO) job trains in one process; "
            f"got {hp.world_size}",
            field="hyperparameters",
        )
    return hp, sizes


@transaction.atomic
def training_request(
    *,
    kind: str,
    datasets: Sequence[DatasetVersion],
    base_model: ModelVersion | None = None,
    hyperparameters: dict[str, Any] | None = None,
    created_by: User | None = None,
    enqueue: bool = True,
) -> TrainingJob:
    """Queue a training job on the ``training`` queue. A fine-tune starts from ``base_model``
    (default: the serving model); its datasets must be ready, of the kind the job trains on, and
    rendered with the base model's tokenizer."""
    if kind not in TrainingJob.Kind.values:
        raise TrainerError(f"kind must be one of {', '.join(TrainingJob.Kind.values)}, not {kind!r}")
    hp, size_keys = hyperparameters_split(kind, hyperparameters or {})
    if (
        kind == TrainingJob.Kind.PRETRAIN
        and base_model is not None
        and base_model.kind == ModelVersion.Kind.IMPORTED
    ):
        raise TrainerError(
            f"{base_model.name} is an imported model, pre-trained elsewhere, and a pretrain job makes a "
            "new Groundwork model: fine-tune it instead (finetune_quality_safety)",
            field="base_model",
        )
    datasets = list(datasets)
    if not datasets:
        raise TrainerError("choose at least one dataset")
    wanted = JOB_DATASET_KINDS[kind]
    for dataset in datasets:
        if dataset.status != DatasetVersion.Status.READY:
            raise TrainerError(f"dataset {dataset.pk} is {dataset.status}, not ready")
        if dataset.kind not in wanted:
            raise TrainerError(
                f"a {kind} job trains on {' or '.join(wanted)} datasets; "
                f"dataset {dataset.pk} is {dataset.kind}"
            )
    if kind != TrainingJob.Kind.PRETRAIN:
        base_model = base_model or selectors.serving_model()
        if base_model is None:
            raise TrainerError("a fine-tune needs a base model, and no model version serves yet")
    window = (base_model.config or {}).get("max_position_embeddings") if base_model is not None else None
    if window and hp.max_length > window:
        raise TrainerError(
            f"max_length {hp.max_length} is more than {base_model.name} can attend to ({window} positions)",
            field="hyperparameters",
        )
    if len({d.tokenizer_sha256 for d in datasets}) > 1:
        raise TrainerError(
            "the datasets were rendered with different tokenizers; train on one tokenizer at a time"
        )
    if base_model is not None and datasets[0].tokenizer_sha256 != base_model.tokenizer_sha256:
        raise TrainerError(
            f"dataset {datasets[0].pk} was rendered with another tokenizer than {base_model.name}'s; "
            f"export it again with {base_model.name} as the tokenizer source"
        )
    job = TrainingJob.objects.create(
        kind=kind,
        base_model=base_model,
        hyperparameters={**hp.as_dict(), **size_keys},
        total_steps=hp.steps,
        created_by=created_by,
    )
    job.datasets.set(datasets)
    if enqueue:
        # If the broker cannot take it, the request leaves no job behind (a 503).
        training_enqueue(job, undo=TrainingJob.objects.filter(pk=job.pk).delete)
    return job


def training_enqueue(job: TrainingJob, *, undo: Callable[[], Any] | None = None) -> None:
    """Queue ``job`` on the ``training`` queue after commit (``trainer.tasks.training_run_task``)."""
    queueing.enqueue("trainer.tasks.training_run_task", job.pk, queue="training", undo=undo)


def job_log(job: TrainingJob, line: str) -> str:
    """The job's log with ``line`` added, stamped with the local time."""
    stamp = timezone.localtime().strftime("%Y-%m-%d %H:%M:%S")
    return f"{job.log}{stamp} {line}\n"


@transaction.atomic
def training_cancel(*, job: TrainingJob, by: User | None = None) -> TrainingJob:
    """Cancel a job: at once when queued, at its next progress report when running."""
    job = TrainingJob.objects.select_for_update().get(pk=job.pk)
    if job.finished:
        raise JobEnded(f"job {job.pk} already ended ({job.status})")
    who = f" by {by}" if by is not None else ""
    if job.status == TrainingJob.Status.QUEUED:
        job.status, job.finished_at = TrainingJob.Status.CANCELLED, timezone.now()
        job.log = job_log(job, f"cancelled{who} before it started")
    else:
        job.log = job_log(job, f"cancel requested{who}")
    job.cancel_requested = True
    job.save(update_fields=["status", "finished_at", "cancel_requested", "log"])
    return job


# --- model versions -----------------------------------------------------------------------------


@transaction.atomic
def model_serve(*, model: ModelVersion) -> ModelVersion:
    """Make ``model`` the one version that answers chats."""
    ModelVersion.objects.filter(serving=True).exclude(pk=model.pk).update(serving=False)
    ModelVersion.objects.filter(pk=model.pk).update(serving=True)
    model.refresh_from_db()
    return model
