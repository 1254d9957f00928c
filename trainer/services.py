"""Every write of the trainer: dataset exports, training jobs, model versions, the serving flag.

Views, API views, admin actions, commands and tasks call these. Long work (building a dataset,
training) is queued after commit and runs in ``dataset_build`` / ``training_run`` on a worker
(queue ``training`` for training), which the admin and the API watch through the rows' progress.

Training jobs survive their worker: the task is ``acks_late`` with ``reject_on_worker_lost``, so a
worker process killed mid-run (kill -9, OOM) gets its message redelivered; ``training_run`` then
claims the job again, counts the attempt and resumes from the last checkpoint, or ends the job
``failed`` with the cause once ``TRAINING_MAX_ATTEMPTS`` are used. A job whose whole worker died is
found by ``training_recover`` (run when a worker starts): its heartbeat is stale or its process is
gone, so it is queued again or failed. A running job is therefore never left ``running``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from annotation import rules
from annotation.models import Campaign
from annotation.services import aggregate_campaign
from groundwork import queueing
from trainer import sources
from trainer.hyperparameters import (
    MODEL_SIZE_BOUNDS,
    VOCAB_SIZE_BOUNDS,
    HyperparameterError,
    Hyperparameters,
    model_sizes_from_dict,
)
from trainer.models import DatasetVersion, ModelVersion, TrainingJob

if TYPE_CHECKING:
    from trainer import formats, training

PROGRESS_EVERY_SECONDS = 1.0


class TrainerError(Exception):
    """A request the trainer refuses; the message says why, for the person who asked, and
    ``field`` names the request's field at fault when one is (``hyperparameters``)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _relative(path: Path) -> str:
    return str(path.relative_to(settings.ARTIFACTS_DIR))


def _now() -> Any:
    return timezone.now()


def tokenizer_sha256(directory: Path) -> str:
    from trainer import records

    return records.sha256_of(directory / "tokenizer.json")


# --- datasets -----------------------------------------------------------------------------------

DATASET_CAMPAIGN_KINDS: dict[str, tuple[str, ...]] = {
    DatasetVersion.Kind.PRETRAIN: (),
    DatasetVersion.Kind.QUALITY_SAFETY: sources.QUALITY_SAFETY_CAMPAIGNS,
    DatasetVersion.Kind.GROUNDEDNESS: sources.GROUNDEDNESS_CAMPAIGNS,
    DatasetVersion.Kind.FILTERED: (),
}
FROM_DIALOGS = (DatasetVersion.Kind.PRETRAIN, DatasetVersion.Kind.FILTERED)
# METHOD.md §6: pre-training turns are kept when safe, sensible, specific and interesting enough.
DEFAULT_THRESHOLDS = {"safe": 0.5, "sensible": 0.5, "specific": 0.5, "interesting": 0.5}


def serving_model() -> ModelVersion | None:
    return ModelVersion.objects.filter(serving=True).first()


@transaction.atomic
def dataset_request(
    *,
    kind: str,
    campaigns: Sequence[Campaign] = (),
    tokenizer_source: ModelVersion | None = None,
    purposes: Sequence[str] = (),
    validation_percent: int = 10,
    vocab_size: int = 8192,
    thresholds: dict[str, float] | None = None,
    created_by: Any = None,
    enqueue: bool = True,
) -> DatasetVersion:
    """Queue the export of a dataset; a worker builds it (``dataset_build``).

    ``tokenizer_source`` is the model version whose tokenizer renders the examples (default: the
    serving model). A ``pretrain`` dataset without one trains a tokenizer on its dialogs. A
    ``filtered`` dataset scores every turn of the dialogs (``purposes``) with that model's
    discriminators and keeps those at or above every one of ``thresholds`` (safe, sensible,
    specific, interesting; default 0.5 each).
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
            raise TrainerError(f"choose at least one campaign of kind {', '.join(allowed)}")
        wrong = [c.name for c in campaigns if c.kind not in allowed]
        if wrong:
            raise TrainerError(
                f"a {kind} dataset takes campaigns of kind {', '.join(allowed)}; not: {', '.join(wrong)}"
            )
    if kind != DatasetVersion.Kind.PRETRAIN:
        tokenizer_source = tokenizer_source or serving_model()
        if tokenizer_source is None:
            raise TrainerError("there is no model version yet, so no tokenizer: train the first model first")
    filters: dict[str, Any] = {"purposes": list(purposes), "vocab_size": vocab_size}
    if kind == DatasetVersion.Kind.FILTERED:
        from trainer.inference import lineage_kinds

        assert tokenizer_source is not None
        if TrainingJob.Kind.FINETUNE_QUALITY_SAFETY not in lineage_kinds(tokenizer_source):
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
        _dataset_enqueue(dataset, undo=DatasetVersion.objects.filter(pk=dataset.pk).delete)
    return dataset


def _dataset_enqueue(dataset: DatasetVersion, *, undo: Callable[[], Any] | None = None) -> None:
    from trainer import tasks

    queueing.enqueue(tasks.build_dataset_task, dataset.pk, undo=undo)


def _dataset_sources(
    dataset: DatasetVersion, campaigns: list[Campaign]
) -> tuple[int, Iterable[sources.Source]]:
    purposes = dataset.filters.get("purposes") or ()
    if dataset.kind in FROM_DIALOGS:
        dialogs = sources.pretrain_dialogs(purposes)
        return dialogs.count(), sources.pretrain_sources(purposes)
    if dataset.kind == DatasetVersion.Kind.QUALITY_SAFETY:
        return sources.labelled_items(campaigns).count(), sources.quality_safety_sources(campaigns)
    return sources.groundedness_rewrites(campaigns).count(), sources.groundedness_sources(campaigns)


def _render(tokenizer: Any, pending: sources.Pending) -> formats.Example:
    from trainer import formats

    if pending.kind == "generative":
        return formats.generative(tokenizer, pending.context, pending.response)
    if pending.kind == "discriminative":
        assert pending.attribute is not None
        assert pending.label is not None
        return formats.discriminative(
            tokenizer, pending.context, pending.response, pending.attribute, pending.label
        )
    assert pending.outcome is not None
    if pending.kind == "research_query":
        return formats.research_query(tokenizer, pending.context, pending.response, pending.outcome[1])
    return formats.research_step(
        tokenizer, pending.context, pending.response, pending.research, pending.outcome
    )


def _row(tokenizer: Any, pending: sources.Pending, split: str, dialog: str) -> dict[str, Any]:
    example = _render(tokenizer, pending)
    return {
        "id": pending.key,
        "split": split,
        "kind": pending.kind,
        "attribute": pending.attribute,
        "label": pending.label,
        "soft_label": pending.soft_label,
        "dialog": dialog,
        "context": [{"speaker": s, "text": t} for s, t in pending.context],
        "response": pending.response,
        "research": [{"query": q, "snippet": s} for q, s in pending.research],
        "outcome_speaker": pending.outcome[0] if pending.outcome else None,
        "outcome": pending.outcome[1] if pending.outcome else None,
        "text": tokenizer.decode(example.ids),
        "input_ids": example.ids,
        "loss_mask": example.loss_mask,
    }


def _throttled(every: float, write: Callable[[], None]) -> Callable[[bool], None]:
    last = [0.0]

    def tick(force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last[0] >= every:
            last[0] = now
            write()

    return tick


def dataset_build(*, dataset_id: int) -> DatasetVersion:
    """Build a queued dataset (the worker's task body): stream the examples into JSONL and
    Parquet, then write the manifest. On any error the dataset is ``failed`` with the cause and
    its folder is removed; nothing half-written stays."""
    from trainer import records

    worker = this_worker()
    dataset = _dataset_claim(dataset_id, worker)
    if dataset is None:
        return DatasetVersion.objects.get(pk=dataset_id)
    directory = dataset.path
    shutil.rmtree(directory, ignore_errors=True)
    try:
        with _heartbeat(DatasetVersion, dataset.pk):
            manifest = _dataset_write(dataset, directory)
    except Exception as exc:
        shutil.rmtree(directory, ignore_errors=True)
        _dataset_fail(dataset, f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, TrainerError):
            raise
        dataset.refresh_from_db()
        return dataset
    manifest_path = directory / "manifest.json"
    manifest_sha256 = records.sha256_of(manifest_path)
    DatasetVersion.objects.filter(pk=dataset.pk).update(
        status=DatasetVersion.Status.READY,
        files={
            **manifest["files"],
            "manifest.json": {"sha256": manifest_sha256, "bytes": manifest_path.stat().st_size},
        },
        sha256=manifest_sha256,
        tokenizer_sha256=manifest["tokenizer"]["sha256"],
        counts={
            "splits": manifest["counts"],
            "label_balance": manifest["label_balance"],
            "skipped": manifest["skipped"],
        },
        finished_at=_now(),
    )
    dataset.refresh_from_db()
    return dataset


def _dataset_claim(dataset_id: int, worker: str) -> DatasetVersion | None:
    """Take the dataset for ``worker``, or None when it must not be built here: finished, built
    by a live worker, or out of attempts (then failed with the cause). A dataset left
    ``running`` by a worker that died (a redelivered message) is taken over and built anew."""
    with transaction.atomic():
        dataset = DatasetVersion.objects.select_for_update().get(pk=dataset_id)
        if dataset.status in (DatasetVersion.Status.READY, DatasetVersion.Status.FAILED):
            return None
        if dataset.status == DatasetVersion.Status.RUNNING and _worker_alive(dataset):
            return None  # a duplicate delivery: it is being built elsewhere
        if dataset.attempts >= settings.TRAINING_MAX_ATTEMPTS:
            _dataset_fail(
                dataset,
                f"the worker building it ({dataset.worker}) died {dataset.attempts} time(s); "
                f"giving up after {settings.TRAINING_MAX_ATTEMPTS} attempts",
            )
            return None
        dataset.status = DatasetVersion.Status.RUNNING
        dataset.directory = f"datasets/{dataset.pk}"
        dataset.worker, dataset.heartbeat_at = worker, _now()
        dataset.attempts += 1
        dataset.done = 0
        dataset.save(update_fields=["status", "directory", "worker", "heartbeat_at", "attempts", "done"])
        return dataset


def _dataset_fail(dataset: DatasetVersion, error: str) -> None:
    DatasetVersion.objects.filter(pk=dataset.pk).update(
        status=DatasetVersion.Status.FAILED, error=error, finished_at=_now()
    )


def dataset_failed(*, dataset_id: int, error: str) -> None:
    """Mark a build whose task raised as failed with the cause, unless it ended meanwhile (the
    safety net of ``build_dataset_task``: ``dataset_build`` records its own failures first)."""
    DatasetVersion.objects.filter(
        pk=dataset_id, status__in=[DatasetVersion.Status.PENDING, DatasetVersion.Status.RUNNING]
    ).update(status=DatasetVersion.Status.FAILED, error=error, finished_at=_now())


def dataset_recover() -> list[DatasetVersion]:
    """Builds marked running whose worker is gone: queue them again (they start from scratch) or
    fail them when out of attempts. Run when a worker starts, as ``training_recover``."""
    recovered = []
    running = DatasetVersion.objects.filter(status=DatasetVersion.Status.RUNNING)
    for dataset_id in running.values_list("pk", flat=True):
        with transaction.atomic():
            dataset = DatasetVersion.objects.select_for_update().get(pk=dataset_id)
            if dataset.status != DatasetVersion.Status.RUNNING or _worker_alive(dataset):
                continue
            if dataset.attempts >= settings.TRAINING_MAX_ATTEMPTS:
                _dataset_fail(dataset, f"the worker building it ({dataset.worker}) was lost; out of attempts")
            else:
                dataset.status, dataset.worker = DatasetVersion.Status.PENDING, ""
                dataset.save(update_fields=["status", "worker"])
                _dataset_enqueue(dataset)
            recovered.append(dataset)
    return recovered


@contextmanager
def _heartbeat(model: type[DatasetVersion], pk: int) -> Iterator[None]:
    """While the block runs, a thread marks the row alive (``heartbeat_at``) a few times per
    ``TRAINING_STALE_SECONDS``, whatever the block is doing (training a tokenizer, scoring)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.TRAINING_STALE_SECONDS / 4):
                model.objects.filter(pk=pk).update(heartbeat_at=_now())
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{model.__name__}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _dataset_write(dataset: DatasetVersion, directory: Path) -> dict[str, Any]:
    from trainer import formats, records
    from trainer import tokenizer as tokenizers

    campaigns = list(dataset.campaigns.order_by("pk"))
    tokenizer_dir = directory / "tokenizer"
    if dataset.tokenizer_source is not None:
        tokenizer = tokenizers.load(dataset.tokenizer_source.path)
    else:
        texts = sources.pretrain_texts(dataset.filters.get("purposes") or ())
        tokenizer = tokenizers.train_tokenizer(
            texts, vocab_size=int(dataset.filters.get("vocab_size") or 8192)
        )
    tokenizers.save(tokenizer, tokenizer_dir)

    if dataset.kind == DatasetVersion.Kind.QUALITY_SAFETY:
        # The labels as the judgments stand now: an item whose consensus task was never queued
        # (the broker was down when its last judgment came) is labelled here.
        for campaign in campaigns:
            aggregate_campaign(campaign=campaign)
    total, units = _dataset_sources(dataset, campaigns)
    DatasetVersion.objects.filter(pk=dataset.pk).update(total=total)
    counts: dict[str, dict[str, int]] = {split: {} for split in records.SPLITS}
    balance: dict[str, dict[str, int]] = {}
    skipped = {"sources_without_examples": 0}
    done = 0
    tick = _throttled(
        PROGRESS_EVERY_SECONDS, lambda: DatasetVersion.objects.filter(pk=dataset.pk).update(done=done)
    )
    keep = _DiscriminatorFilter(dataset, tokenizer) if dataset.kind == DatasetVersion.Kind.FILTERED else None
    with records.DatasetWriter(directory) as writer:
        for source in units:
            split = records.split_of(source.dialog, dataset.validation_percent)
            if not source.examples:
                skipped["sources_without_examples"] += 1
            for pending in keep(source.examples) if keep else source.examples:
                writer.add(_row(tokenizer, pending, split, source.dialog))
                counts[split][pending.kind] = counts[split].get(pending.kind, 0) + 1
                if pending.attribute is not None:
                    side = balance.setdefault(pending.attribute, {"0": 0, "1": 0})
                    side[str(pending.label)] += 1
            done += 1
            tick(False)
    tick(True)
    if not any(counts[split] for split in records.SPLITS):
        raise TrainerError(
            "the chosen sources give no examples "
            "(no consensus labels, no researched rewrites or no dialogs yet)"
        )
    manifest = {
        "kind": dataset.kind,
        "format": formats.describe(),
        "rules_version": rules.RULES_VERSION,
        "tokenizer": {
            "source_model": dataset.tokenizer_source.name if dataset.tokenizer_source else None,
            "trained_on": None if dataset.tokenizer_source else "the dataset's dialogs",
            "vocab_size": len(tokenizer),
            "sha256": tokenizer_sha256(tokenizer_dir),
        },
        "source_campaigns": [{"id": c.pk, "name": c.name, "kind": c.kind} for c in campaigns],
        "filters": dataset.filters,
        "validation_percent": dataset.validation_percent,
        "split_by": "dialog (sha256 of its id)",
        "counts": counts,
        "label_balance": balance,
        "skipped": skipped,
        "files": writer.files(),
    }
    if keep is not None:
        manifest["filter"] = keep.report
    (directory / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    return manifest


MAX_SCORED_TOKENS = 512  # a long dialog's context is cut from the left for scoring


class _DiscriminatorFilter:
    """Keeps the generative examples the model's discriminators rate at or above every threshold;
    ``report`` counts what was scored, kept and dropped (by the first threshold missed)."""

    ORDER = (
        ("safe", "UNSAFE"),
        ("sensible", "SENSIBLE"),
        ("specific", "SPECIFIC"),
        ("interesting", "INTERESTING"),
    )

    def __init__(self, dataset: DatasetVersion, tokenizer: Any) -> None:
        from trainer import sampling
        from trainer.modeling import GroundworkForCausalLM

        assert dataset.tokenizer_source is not None
        model = GroundworkForCausalLM.from_pretrained(str(dataset.tokenizer_source.path))
        self.scorer = sampling.Scorer(model, tokenizer, discriminators=True)
        self.attributes = sampling.RANKED_ATTRIBUTES
        self.thresholds = dataset.filters["thresholds"]
        self.report: dict[str, Any] = {
            "model": dataset.tokenizer_source.name,
            "thresholds": self.thresholds,
            "scored": 0,
            "kept": 0,
            "dropped": {name: 0 for name, _ in self.ORDER},
        }

    def __call__(self, examples: list[sources.Pending]) -> list[sources.Pending]:
        from trainer import formats

        if not examples:
            return []
        prefixes = [
            formats.render_for_scoring(self.scorer.tokenizer, e.context, e.response)[-MAX_SCORED_TOKENS:]
            for e in examples
        ]
        scores = self.scorer.score_by_reencoding([], prefixes, self.attributes)
        kept = []
        for i, example in enumerate(examples):
            self.report["scored"] += 1
            probability = {name: scores[attribute][i] for name, attribute in self.ORDER}
            probability["safe"] = 1 - probability["safe"]  # P(UNSAFE = 0)
            missed = next((name for name, _ in self.ORDER if probability[name] < self.thresholds[name]), None)
            if missed is None:
                self.report["kept"] += 1
                kept.append(example)
            else:
                self.report["dropped"][missed] += 1
        return kept


def dataset_file(dataset: DatasetVersion, name: str) -> Path:
    """The path of one downloadable file of a ready dataset (TrainerError for anything else)."""
    if dataset.status != DatasetVersion.Status.READY:
        raise TrainerError(f"dataset {dataset.pk} is {dataset.status}, not ready")
    if name not in dataset.files:
        raise TrainerError(
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
}
MODEL_SIZE_FIELDS = tuple(MODEL_SIZE_BOUNDS)  # d_model, n_layer, n_head, d_ff


def _split_hyperparameters(kind: str, hyperparameters: dict[str, Any]) -> tuple[Hyperparameters, dict]:
    data = dict(hyperparameters or {})
    model = data.pop("model", None) or {}
    if model and kind != TrainingJob.Kind.PRETRAIN:
        raise TrainerError(
            "model sizes (hyperparameters.model) are for pretrain jobs; a fine-tune keeps its base",
            field="hyperparameters",
        )
    try:
        return Hyperparameters.from_dict(data), model_sizes_from_dict(model)
    except HyperparameterError as exc:
        raise TrainerError(str(exc), field="hyperparameters") from None


@transaction.atomic
def training_request(
    *,
    kind: str,
    datasets: Sequence[DatasetVersion],
    base_model: ModelVersion | None = None,
    hyperparameters: dict[str, Any] | None = None,
    created_by: Any = None,
    enqueue: bool = True,
) -> TrainingJob:
    """Queue a training job on the ``training`` queue. A fine-tune starts from ``base_model``
    (default: the serving model); its datasets must be ready, of the kind the job trains on, and
    rendered with the base model's tokenizer."""
    if kind not in TrainingJob.Kind.values:
        raise TrainerError(f"kind must be one of {', '.join(TrainingJob.Kind.values)}, not {kind!r}")
    hp, model_sizes = _split_hyperparameters(kind, hyperparameters or {})
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
        base_model = base_model or serving_model()
        if base_model is None:
            raise TrainerError("a fine-tune needs a base model, and no model version serves yet")
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
        hyperparameters={**hp.as_dict(), **({"model": model_sizes} if model_sizes else {})},
        total_steps=hp.steps,
        created_by=created_by,
    )
    job.datasets.set(datasets)
    if enqueue:
        # If the broker cannot take it, the request leaves no job behind (a 503).
        _enqueue(job, undo=TrainingJob.objects.filter(pk=job.pk).delete)
    return job


def _enqueue(job: TrainingJob, *, undo: Callable[[], Any] | None = None) -> None:
    from trainer import tasks

    queueing.enqueue(tasks.train_task, job.pk, queue="training", undo=undo)


def _log_line(job: TrainingJob, line: str) -> str:
    stamp = timezone.localtime().strftime("%Y-%m-%d %H:%M:%S")
    return f"{job.log}{stamp} {line}\n"


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_alive(job: TrainingJob | DatasetVersion) -> bool:
    """Whether the process that claimed ``job`` (a training job or a dataset build) still runs
    it: a fresh heartbeat and, when it ran on this host, a live process id."""
    if job.heartbeat_at is None or job.heartbeat_at < _now() - timedelta(
        seconds=settings.TRAINING_STALE_SECONDS
    ):
        return False
    host, _, pid = job.worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def training_failed(*, job_id: int, error: str) -> None:
    """Mark a job whose task raised as failed with the cause, unless it ended meanwhile (the
    safety net of ``train_task``: ``training_run`` records its own failures first)."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if not job.finished:
            _fail(job, error)


def _fail(job: TrainingJob, error: str) -> None:
    job.status = TrainingJob.Status.FAILED
    job.error = error
    job.finished_at = _now()
    job.log = _log_line(job, f"failed: {error}")
    job.save(update_fields=["status", "error", "finished_at", "log"])


def _claim(job_id: int, worker: str) -> TrainingJob | None:
    """Take the job for ``worker``, or None when it must not run here (finished, cancelled, run
    by a live worker, or out of attempts — then it is failed with the cause)."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.finished:
            return None
        if job.status == TrainingJob.Status.RUNNING and job.worker != worker and _worker_alive(job):
            return None  # a duplicate delivery: the job runs elsewhere
        if job.cancel_requested:
            job.status, job.finished_at = TrainingJob.Status.CANCELLED, _now()
            job.log = _log_line(job, "cancelled before it started")
            job.save(update_fields=["status", "finished_at", "log"])
            return None
        lost = job.status == TrainingJob.Status.RUNNING
        if lost:
            job.log = _log_line(job, f"worker {job.worker} was lost at step {job.step}")
        if job.attempts >= settings.TRAINING_MAX_ATTEMPTS:
            _fail(
                job,
                f"the worker running this job died {job.attempts} time(s), last at step {job.step} "
                f"(checkpoint at step {job.checkpoint_step}); "
                f"giving up after {settings.TRAINING_MAX_ATTEMPTS} attempts",
            )
            return None
        job.attempts += 1
        job.status = TrainingJob.Status.RUNNING
        job.worker = worker
        job.heartbeat_at = _now()
        job.started_at = job.started_at or _now()
        resume = (
            f", resuming from the checkpoint at step {job.checkpoint_step}" if job.checkpoint_step else ""
        )
        job.log = _log_line(job, f"attempt {job.attempts} on {worker}{resume}")
        job.save()
        return job


def _training_data(job: TrainingJob) -> tuple[list[training.Pair], list[training.Pair], list[training.Rated]]:
    from trainer import records, training

    train: list[training.Pair] = []
    validation: list[training.Pair] = []
    rated: list[training.Rated] = []
    columns = ("input_ids", "loss_mask", "kind", "attribute", "label")
    for dataset in job.datasets.order_by("pk"):
        for row in records.read_rows(dataset.path, "train", columns):
            train.append((row["input_ids"], row["loss_mask"]))
        for row in records.read_rows(dataset.path, "validation", columns):
            validation.append((row["input_ids"], row["loss_mask"]))
            if row["kind"] == "discriminative":
                rated.append(training.Rated(row["attribute"], row["label"], row["input_ids"]))
    return train, validation, rated


def _base(job: TrainingJob) -> tuple[Any, Any]:
    """(model, tokenizer) to start from: the base model, or a new one for a pretrain job."""
    from trainer import tokenizer as tokenizers
    from trainer.modeling import GroundworkConfig, GroundworkForCausalLM

    if job.base_model is not None:
        model = GroundworkForCausalLM.from_pretrained(str(job.base_model.path))
        return model, tokenizers.load(job.base_model.path)
    dataset = job.datasets.order_by("pk").first()
    tokenizer = tokenizers.load(dataset.path / "tokenizer")
    config = GroundworkConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **job.hyperparameters.get("model", {}),
    )
    return GroundworkForCausalLM(config), tokenizer


def _evaluate(model: Any, tokenizer: Any, hp: Hyperparameters, validation: list, rated: list) -> dict:
    from trainer import tokenizer as tokenizers
    from trainer import training

    return training.evaluate(
        model,
        validation,
        rated,
        pad_id=tokenizer.pad_token_id,
        zero_id=tokenizers.special_id(tokenizer, tokenizers.RATING_TOKENS[0]),
        one_id=tokenizers.special_id(tokenizer, tokenizers.RATING_TOKENS[1]),
        max_length=hp.max_length,
    )


def training_run(
    *, job_id: int, worker: str | None = None, on_progress: Callable[[training.Progress], None] | None = None
) -> TrainingJob:
    """Run a queued job (the worker's task body) to a model version, resuming from a checkpoint.
    ``on_progress`` also gets every progress report (a command prints them)."""
    import torch

    from trainer import training

    worker = worker or this_worker()
    job = _claim(job_id, worker)
    if job is None:
        return TrainingJob.objects.get(pk=job_id)
    hp = Hyperparameters.from_dict({k: v for k, v in job.hyperparameters.items() if k != "model"})
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        train, validation, rated = _training_data(job)
        model, tokenizer = _base(job)
        metrics = dict(job.metrics)
        if "initial" not in metrics:
            metrics["initial"] = _evaluate(model, tokenizer, hp, validation, rated)
            TrainingJob.objects.filter(pk=job.pk).update(metrics=metrics, heartbeat_at=_now())

        def report(progress: training.Progress) -> bool:
            if on_progress is not None:
                on_progress(progress)
            return bool(
                TrainingJob.objects.filter(
                    pk=job.pk, worker=worker, status=TrainingJob.Status.RUNNING, cancel_requested=False
                ).update(
                    step=progress.step,
                    loss=progress.loss,
                    tokens_per_second=round(progress.tokens_per_second, 1),
                    history=progress.history,
                    heartbeat_at=_now(),
                )
            )

        def checkpointed(step: int) -> None:
            TrainingJob.objects.filter(pk=job.pk, worker=worker).update(
                checkpoint_step=step, heartbeat_at=_now()
            )

        progress = training.train(
            model,
            train,
            hp,
            pad_id=tokenizer.pad_token_id,
            checkpoint_dir=job.checkpoint_dir,
            report=report,
            on_checkpoint=checkpointed,
        )
        TrainingJob.objects.filter(pk=job.pk, worker=worker).update(heartbeat_at=_now())
        metrics["final"] = _evaluate(model, tokenizer, hp, validation, rated)
        metrics["train_loss"] = progress.loss
        metrics["tokens_per_second"] = round(progress.tokens_per_second, 1)
        return _finish(job, worker, model, tokenizer, metrics)
    except training.Cancelled:
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.worker == worker and job.cancel_requested:
                job.status, job.finished_at = TrainingJob.Status.CANCELLED, _now()
                job.log = _log_line(job, f"cancelled at step {job.step}")
                job.save(update_fields=["status", "finished_at", "log"])
        return job
    except Exception as exc:
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.worker == worker and not job.finished:
                _fail(job, f"{type(exc).__name__}: {exc}")
                job.log += traceback.format_exc()
                job.save(update_fields=["log"])
        return job


def _finish(job: TrainingJob, worker: str, model: Any, tokenizer: Any, metrics: dict) -> TrainingJob:
    name = f"gw-{job.pk}-{job.kind.replace('finetune_', 'ft-').replace('_', '-')}"
    directory = settings.ARTIFACTS_DIR / "models" / name
    staging = directory.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    config = {field: getattr(model.config, field) for field in ("vocab_size", *MODEL_SIZE_FIELDS)}
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.worker != worker or job.finished:
            return job
        version = ModelVersion.objects.create(
            name=name,
            parent=job.base_model,
            job=job,
            directory=_relative(directory),
            config=config,
            parameters=sum(p.numel() for p in model.parameters()),
            tokenizer_sha256=tokenizer_sha256(directory),
            metrics=metrics,
        )
        job.status, job.finished_at, job.metrics = TrainingJob.Status.SUCCEEDED, _now(), metrics
        job.log = _log_line(job, f"done: model version {version.name}")
        job.save(update_fields=["status", "finished_at", "metrics", "log"])
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    return job


@transaction.atomic
def training_cancel(*, job: TrainingJob, by: Any = None) -> TrainingJob:
    """Cancel a job: at once when queued, at its next progress report when running."""
    job = TrainingJob.objects.select_for_update().get(pk=job.pk)
    if job.finished:
        raise TrainerError(f"job {job.pk} already ended ({job.status})")
    who = f" by {by}" if by is not None else ""
    if job.status == TrainingJob.Status.QUEUED:
        job.status, job.finished_at = TrainingJob.Status.CANCELLED, _now()
        job.log = _log_line(job, f"cancelled{who} before it started")
    else:
        job.log = _log_line(job, f"cancel requested{who}")
    job.cancel_requested = True
    job.save(update_fields=["status", "finished_at", "cancel_requested", "log"])
    return job


def training_recover() -> list[TrainingJob]:
    """Jobs marked running whose worker is gone: queue them again (they resume from their
    checkpoint) or fail them when out of attempts. Run when a worker starts."""
    recovered = []
    for job_id in TrainingJob.objects.filter(status=TrainingJob.Status.RUNNING).values_list("pk", flat=True):
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.status != TrainingJob.Status.RUNNING or _worker_alive(job):
                continue
            if job.attempts >= settings.TRAINING_MAX_ATTEMPTS:
                _fail(
                    job,
                    f"the worker running this job ({job.worker}) was lost at step {job.step}; "
                    "out of attempts",
                )
            else:
                job.log = _log_line(job, f"worker {job.worker} was lost at step {job.step}; queued again")
                job.status, job.worker = TrainingJob.Status.QUEUED, ""
                job.save(update_fields=["status", "worker", "log"])
                _enqueue(job)
            recovered.append(job)
    return recovered


# --- model versions -----------------------------------------------------------------------------


@transaction.atomic
def model_serve(*, model: ModelVersion) -> ModelVersion:
    """Make ``model`` the one version that answers chats."""
    ModelVersion.objects.filter(serving=True).exclude(pk=model.pk).update(serving=False)
    ModelVersion.objects.filter(pk=model.pk).update(serving=True)
    model.refresh_from_db()
    return model


def first_model_ensure(
    *,
    steps: int | None = None,
    purposes: Sequence[str] = (),
    model: dict[str, int] | None = None,
    vocab_size: int = 8192,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> ModelVersion:
    """The serving model, or a new one: a tokenizer and a pre-trained model on the dialogs,
    trained here in the foreground (``make run``, ``train_first_model``)."""
    current = serving_model() or ModelVersion.objects.first()
    if current is not None and not force:
        if not current.serving:
            current = model_serve(model=current)
        say(f"model {current.name} is there (in {current.path}); not training")
        return current
    hyperparameters = {
        "steps": steps or settings.FIRST_MODEL_STEPS,
        "checkpoint_every": 100,
        **({"model": model} if model else {}),
    }
    _split_hyperparameters(TrainingJob.Kind.PRETRAIN, hyperparameters)  # refused before any work
    say("exporting the pretrain dataset and training a tokenizer on the dialogs…")
    dataset = dataset_request(
        kind=DatasetVersion.Kind.PRETRAIN, purposes=purposes, vocab_size=vocab_size, enqueue=False
    )
    dataset = dataset_build(dataset_id=dataset.pk)
    if dataset.status != DatasetVersion.Status.READY:
        raise TrainerError(f"dataset {dataset.pk} failed: {dataset.error}")
    say(f"dataset {dataset.pk}: {dataset.counts['splits']}")
    job = training_request(
        kind=TrainingJob.Kind.PRETRAIN,
        datasets=[dataset],
        hyperparameters=hyperparameters,
        enqueue=False,
    )
    say(f"training job {job.pk}: {job.total_steps} steps…")
    last = [0.0]

    def progress(p: training.Progress) -> None:
        if time.monotonic() - last[0] >= 10 or p.step == p.total_steps:
            last[0] = time.monotonic()
            say(f"  step {p.step}/{p.total_steps}  loss {p.loss:.3f}  {p.tokens_per_second:,.0f} tokens/s")

    job = training_run(job_id=job.pk, on_progress=progress)
    if job.status != TrainingJob.Status.SUCCEEDED:
        raise TrainerError(f"training job {job.pk} {job.status}: {job.error}")
    version = model_serve(model=job.model_version)
    final = version.metrics.get("final", {})
    say(f"model {version.name} serves (validation loss {final.get('validation_loss')})")
    return version
