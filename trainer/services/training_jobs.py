"""Training a model, in a Celery worker (queue ``training``, ``trainer.tasks.training_run_task``), and
the first model, in the foreground (``first_model_ensure``).

Training jobs survive their worker: the task is ``acks_late`` with ``reject_on_worker_lost``, so a
worker process killed mid-run (kill -9, OOM) gets its message redelivered; ``training_run`` then
claims the job again, counts the attempt and resumes from the last checkpoint, or ends the job
``failed`` with the cause once ``TRAINING_MAX_ATTEMPTS`` are used. A job whose whole worker died is
found by ``training_recover`` (run when a worker starts): its heartbeat is stale or its process is
gone, so it is queued again or failed. A running job is therefore never left ``running``.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from trainer import causal_lm, devices, distributed, hits, records, sampling, selectors, training
from trainer import tokenizer as tokenizers
from trainer.hyperparameters import MODEL_KEYS, Hyperparameters
from trainer.modeling import GroundworkConfig, model_init
from trainer.models import DatasetVersion, ModelVersion, TrainingJob
from trainer.services import dataset_builds, preference_jobs
from trainer.services.requests import (
    TrainerError,
    dataset_request,
    hyperparameters_split,
    job_log,
    model_serve,
    training_enqueue,
    training_request,
)
from trainer.services.workers import this_worker, worker_alive


def training_failed(*, job_id: int, error: str) -> None:
    """Mark a job whose task raised as failed with the cause, unless it ended meanwhile (the
    safety net of ``training_run_task``: ``training_run`` records its own failures first)."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if not job.finished:
            _fail(job, error)


def _fail(job: TrainingJob, error: str) -> None:
    job.status = TrainingJob.Status.FAILED
    job.error = error
    job.finished_at = timezone.now()
    job.log = job_log(job, f"failed: {error}")
    job.save(update_fields=["status", "error", "finished_at", "log"])


def _claim(job_id: int, worker: str) -> TrainingJob | None:
    """Take the job for ``worker``, or None when it must not run here (finished, cancelled, run
    by a live worker, or out of attempts — then it is failed with the cause)."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.finished:
            return None
        if job.status == TrainingJob.Status.RUNNING and job.worker != worker and worker_alive(job):
            return None  # a duplicate delivery: the job runs elsewhere
        if job.cancel_requested:
            job.status, job.finished_at = TrainingJob.Status.CANCELLED, timezone.now()
            job.log = job_log(job, "cancelled before it started")
            job.save(update_fields=["status", "finished_at", "log"])
            return None
        lost = job.status == TrainingJob.Status.RUNNING
        if lost:
            job.log = job_log(job, f"worker {job.worker} was lost at step {job.step}")
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
        job.heartbeat_at = timezone.now()
        job.started_at = job.started_at or timezone.now()
        resume = (
            f", resuming from the checkpoint at step {job.checkpoint_step}" if job.checkpoint_step else ""
        )
        job.log = job_log(job, f"attempt {job.attempts} on {worker}{resume}")
        job.save()
        return job


COLUMNS = ("input_ids", "loss_mask", "kind", "attribute", "label")


def _rows(dataset: DatasetVersion, split: str) -> list[dict[str, Any]]:
    return list(records.read_rows(dataset.path, split, COLUMNS))


def _pairs(rows: list[dict[str, Any]]) -> list[training.Pair]:
    return [(row["input_ids"], row["loss_mask"]) for row in rows]


def _rated(rows: list[dict[str, Any]]) -> list[training.Rated]:
    return [
        training.Rated(row["attribute"], row["label"], row["input_ids"])
        for row in rows
        if row["kind"] == "discriminative"
    ]


def _training_data(
    job: TrainingJob, hp: Hyperparameters
) -> tuple[list[training.Pair], list[training.Pair], list[training.Rated], dict[str, Any] | None]:
    """``(train, validation, rated, mix)``: the examples of the job's datasets, its validation
    pairs and the discriminative ones among them; a groundedness fine-tune also gets
    ``_quality_safety_mix``'s examples and its ``mix`` record (None for other jobs)."""
    train: list[training.Pair] = []
    validation: list[training.Pair] = []
    rated: list[training.Rated] = []
    for dataset in job.datasets.order_by("pk"):
        train += _pairs(_rows(dataset, "train"))
        held_out = _rows(dataset, "validation")
        validation += _pairs(held_out)
        rated += _rated(held_out)
    if job.kind != TrainingJob.Kind.FINETUNE_GROUNDEDNESS or job.base_model is None:
        return train, validation, rated, None
    mixed, held_out_rated, mix = _quality_safety_mix(job, hp, own_examples=len(train))
    return train + mixed, validation, rated + held_out_rated, mix


def _quality_safety_mix(
    job: TrainingJob, hp: Hyperparameters, *, own_examples: int
) -> tuple[list[training.Pair], list[training.Rated], dict[str, Any]]:
    """What a groundedness fine-tune keeps of the discriminators' data (METHOD.md §8: it trains on
    top of FT quality-safety, whose discriminators inference keeps using): ``hp.qs_mix_share`` of
    the training examples of the datasets the base model's quality-safety fine-tune trained on
    (``selectors.quality_safety_data``), drawn with ``hp.seed``, and the discriminative examples
    of their validation split, on which every discriminator is evaluated before and after.
    Datasets rendered with another tokenizer than the base model's are left out and named."""
    assert job.base_model is not None
    source, datasets = selectors.quality_safety_data(job.base_model)
    usable = [d for d in datasets if d.tokenizer_sha256 == job.base_model.tokenizer_sha256]
    available: list[training.Pair] = []
    held_out: list[training.Rated] = []
    for dataset in usable:
        available += _pairs(_rows(dataset, "train"))
        held_out += _rated(_rows(dataset, "validation"))
    chosen = training.mix_indices(len(available), hp.qs_mix_share, hp.seed)
    mix = {
        "share": hp.qs_mix_share,
        "source": source.name if source is not None else None,
        "datasets": [d.pk for d in usable],
        "left_out": [d.pk for d in datasets if d not in usable],
        "available": len(available),
        "mixed": len(chosen),
        "own_examples": own_examples,
        "evaluated": len(held_out),
    }
    return [available[i] for i in chosen], held_out, mix


def _mix_line(job: TrainingJob, mix: dict[str, Any]) -> str:
    """The log's line about the mix (also what the job page says when there is nothing to mix)."""
    if mix["source"] is None:
        return (
            f"no quality-safety data to mix in: no finetune_quality_safety job in the lineage of "
            f"{job.base_model}, so no discriminators to evaluate"
        )
    datasets = ", ".join(f"#{pk}" for pk in mix["datasets"]) or "none"
    return (
        f"mixing {mix['mixed']} of {mix['available']} quality-safety training examples "
        f"(share {mix['share']:g}) of datasets {datasets} (from {mix['source']}) into "
        f"{mix['own_examples']} groundedness examples; discriminators evaluated on "
        f"{mix['evaluated']} held-out examples"
    )


def _base(job: TrainingJob, hp: Hyperparameters) -> tuple[Any, Any]:
    """(model, tokenizer) to start from: the base model (ours or imported, its embeddings sized
    for its tokenizer: ``causal_lm.load``), or for a pretrain job a new one whose initial weights
    follow from its model sizes and ``hp.seed`` alone (``model_init``)."""
    if job.base_model is not None:
        tokenizer = tokenizers.load(job.base_model.path)
        return causal_lm.load(job.base_model.path, tokenizer), tokenizer
    dataset = job.datasets.order_by("pk").first()
    tokenizer = tokenizers.load(dataset.path / "tokenizer")
    config = GroundworkConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **job.hyperparameters.get("model", {}),
    )
    return model_init(config, seed=hp.seed), tokenizer


def _evaluate(
    model: Any,
    tokenizer: Any,
    hp: Hyperparameters,
    validation: list,
    rated: list,
    cases: list[hits.Case] | None = None,
) -> dict:
    """Validation loss and discriminators (``training.evaluate``), and with ``cases`` the held-out
    response ranking (``hits.hits_at_1``): Hits@1 of 20 on validation turns."""
    metrics = training.evaluate(
        model,
        validation,
        rated,
        pad_id=tokenizer.pad_token_id,
        zero_id=tokenizers.special_id(tokenizer, tokenizers.RATING_TOKENS[0]),
        one_id=tokenizers.special_id(tokenizer, tokenizers.RATING_TOKENS[1]),
        max_length=hp.max_length,
    )
    if cases:
        scorer = sampling.Scorer(model, tokenizer, discriminators=False)
        metrics.update(hits.hits_at_1(cases, scorer.response_log_likelihoods, seed_key=hits.HELD_OUT_SEED))
    return metrics


def ranking_cases(job: TrainingJob) -> list[hits.Case]:
    """The held-out turns a job's models are ranked on: ``hits.held_out_cases`` of the
    generative validation examples of its datasets, less any turn its training split holds too
    (the demo corpus repeats conversations under other ids: most of its validation turns)."""
    columns = ("kind", "dialog", "context", "response")
    datasets = list(job.datasets.order_by("pk"))
    seen = {
        hits.pair_key(row["context"], row["response"])
        for d in datasets
        for row in records.read_rows(d.path, "train", ("context", "response"))
    }
    rows = [row for d in datasets for row in records.read_rows(d.path, "validation", columns)]
    return hits.held_out_cases(rows, seen=seen)


def training_run(
    *, job_id: int, worker: str | None = None, on_progress: Callable[[training.Progress], None] | None = None
) -> TrainingJob:
    """Run a queued job (the worker's task body) to a model version, resuming from a checkpoint.
    ``on_progress`` also gets every progress report (a command prints them)."""
    worker = worker or this_worker()
    job = _claim(job_id, worker)
    if job is None:
        return TrainingJob.objects.get(pk=job_id)
    hp = Hyperparameters.from_dict({k: v for k, v in job.hyperparameters.items() if k not in MODEL_KEYS})
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        device = _device(job, hp)
        if job.kind == TrainingJob.Kind.FINETUNE_PREFERENCE:
            model, tokenizer = _base(job, hp)
            metrics = preference_jobs.preference_train(
                job,
                hp,
                worker,
                model,
                tokenizer,
                report=_reporter(job, worker, on_progress),
                on_checkpoint=_checkpointed(job, worker),
                device=device,
            )
            return _finish(job, worker, model, tokenizer, metrics)
        train, validation, rated, mix = _training_data(job, hp)
        model, tokenizer = _base(job, hp)
        model.to(device)
        cases = ranking_cases(job)
        metrics = dict(job.metrics)
        if "initial" not in metrics:
            # "before": the base model on the held-out examples; "final" is the new weights on them.
            # A new model ranks by chance (5 %): its initial ranking is not worth the time.
            metrics["initial"] = _evaluate(
                model, tokenizer, hp, validation, rated, cases if job.base_model is not None else None
            )
            updates: dict[str, Any] = {}
            if mix is not None:
                metrics["mix"] = mix
                job.log = updates["log"] = job_log(job, _mix_line(job, mix))
            TrainingJob.objects.filter(pk=job.pk).update(
                metrics=metrics, heartbeat_at=timezone.now(), **updates
            )

        progress = distributed.run(  # training.train itself when world_size is 1
            model,
            train,
            hp,
            pad_id=tokenizer.pad_token_id,
            checkpoint_dir=job.checkpoint_dir,
            report=_reporter(job, worker, on_progress),
            on_checkpoint=_checkpointed(job, worker),
            device=device,
            timeout_s=settings.TRAINING_STALE_SECONDS,
        )
        TrainingJob.objects.filter(pk=job.pk, worker=worker).update(heartbeat_at=timezone.now())
        metrics["final"] = _evaluate(model, tokenizer, hp, validation, rated, cases)
        metrics["train_loss"] = progress.loss
        metrics["tokens_per_second"] = round(progress.tokens_per_second, 1)
        metrics["average_tokens_per_second"] = round(progress.average_tokens_per_second, 1)
        return _finish(job, worker, model, tokenizer, metrics)
    except training.Cancelled:
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.worker == worker and job.cancel_requested:
                job.status, job.finished_at = TrainingJob.Status.CANCELLED, timezone.now()
                job.log = job_log(job, f"cancelled at step {job.step}")
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


def _reporter(
    job: TrainingJob, worker: str, on_progress: Callable[[training.Progress], None] | None
) -> Callable[[training.Progress], bool]:
    """The training loop's ``report``: progress to the job's row (and ``on_progress``); False
    (stop) once the row is no longer running on ``worker`` or was cancelled."""

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
                average_tokens_per_second=round(progress.average_tokens_per_second, 1),
                history=progress.history,
                heartbeat_at=timezone.now(),
            )
        )

    return report


def _checkpointed(job: TrainingJob, worker: str) -> Callable[[int], None]:
    """The training loop's ``on_checkpoint``: the job's row says which step its checkpoint holds."""

    def checkpointed(step: int) -> None:
        TrainingJob.objects.filter(pk=job.pk, worker=worker).update(
            checkpoint_step=step, heartbeat_at=timezone.now()
        )

    return checkpointed


def _device(job: TrainingJob, hp: Hyperparameters) -> torch.device:
    """Where this worker trains the job (``settings.TRAINING_DEVICE``), recorded on the job with
    the world size and the precision; a device that is not there is a ``DeviceError``."""
    device = devices.choose(settings.TRAINING_DEVICE)
    devices.check_world_size(device, hp.world_size)
    devices.prepare(device)
    job.device, job.precision = devices.describe(device, hp.world_size), devices.precision(device, hp.bf16)
    job.log = job_log(job, f"training on {job.device} in {job.precision}")
    TrainingJob.objects.filter(pk=job.pk).update(device=job.device, precision=job.precision, log=job.log)
    return device


def _finish(job: TrainingJob, worker: str, model: Any, tokenizer: Any, metrics: dict) -> TrainingJob:
    name = f"gw-{job.pk}-{job.kind.replace('finetune_', 'ft-').replace('_', '-')}"
    directory = settings.ARTIFACTS_DIR / "models" / name
    staging = directory.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    config = causal_lm.config_record(model.config)
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.worker != worker or job.finished:
            return job
        version = ModelVersion.objects.create(
            name=name,
            parent=job.base_model,
            job=job,
            directory=str(directory.relative_to(settings.ARTIFACTS_DIR)),
            config=config,
            parameters=sum(p.numel() for p in model.parameters()),
            tokenizer_sha256=dataset_builds.tokenizer_sha256(directory),
            metrics=metrics,
            device=job.device,
            precision=job.precision,
        )
        job.status, job.finished_at, job.metrics = TrainingJob.Status.SUCCEEDED, timezone.now(), metrics
        job.average_tokens_per_second = metrics.get("average_tokens_per_second")
        job.log = job_log(job, f"done: model version {version.name}")
        job.save(update_fields=["status", "finished_at", "metrics", "average_tokens_per_second", "log"])
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    return job


def training_recover() -> list[TrainingJob]:
    """Jobs marked running whose worker is gone: queue them again (they resume from their
    checkpoint) or fail them when out of attempts. Run when a worker starts."""
    recovered = []
    for job_id in TrainingJob.objects.filter(status=TrainingJob.Status.RUNNING).values_list("pk", flat=True):
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.status != TrainingJob.Status.RUNNING or worker_alive(job):
                continue
            if job.attempts >= settings.TRAINING_MAX_ATTEMPTS:
                _fail(
                    job,
                    f"the worker running this job ({job.worker}) was lost at step {job.step}; "
                    "out of attempts",
                )
            else:
                job.log = job_log(job, f"worker {job.worker} was lost at step {job.step}; queued again")
                job.status, job.worker = TrainingJob.Status.QUEUED, ""
                job.save(update_fields=["status", "worker", "log"])
                training_enqueue(job)
            recovered.append(job)
    return recovered


# --- the first model ----------------------------------------------------------------------------


# The first model's tokenizer size (train_first_model --vocab-size). Its other hyperparameters are
# the job defaults: at the same compute neither a learning rate of 3e-3, nor 22 examples of at most
# 64 tokens a step, nor a 2,048-token vocabulary ranked held-out turns better than noise (run log
# in the README), so none is taken.
FIRST_MODEL_VOCAB_SIZE = 8192


def first_model_ensure(
    *,
    steps: int | None = None,
    purposes: Sequence[str] = (),
    model: dict[str, int] | None = None,
    vocab_size: int | None = None,
    documents: int | None = None,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> ModelVersion:
    """The serving model, or a new one: a tokenizer and a pre-trained model on the dialogs and
    ``documents`` documents of the search corpus (None: ``FIRST_MODEL_DOCUMENTS``; 0: none),
    trained here in the foreground (``make run``, ``train_first_model``)."""
    current = selectors.serving_model() or ModelVersion.objects.first()
    if current is not None and not force:
        if not current.serving:
            current = model_serve(model=current)
        say(f"model {current.name} is there (in {current.path}); not training")
        return current
    documents = settings.FIRST_MODEL_DOCUMENTS if documents is None else documents
    hyperparameters = {
        "steps": steps or settings.FIRST_MODEL_STEPS,
        "checkpoint_every": 100,
        **({"model": model} if model else {}),
    }
    hyperparameters_split(TrainingJob.Kind.PRETRAIN, hyperparameters)  # refused before any work
    with_documents = f" and {documents} documents" if documents else ""
    say(f"exporting the pretrain dataset and training a tokenizer on the dialogs{with_documents}…")
    dataset = dataset_request(
        kind=DatasetVersion.Kind.PRETRAIN,
        purposes=purposes,
        vocab_size=vocab_size or FIRST_MODEL_VOCAB_SIZE,
        documents=documents,
        enqueue=False,
    )
    dataset = dataset_builds.dataset_build(dataset_id=dataset.pk)
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
            say(
                f"  step {p.step}/{p.total_steps}  loss {p.loss:.3f}  {p.tokens_per_second:,.0f} tokens/s "
                f"(average {p.average_tokens_per_second:,.0f})"
            )

    job = training_run(job_id=job.pk, on_progress=progress)
    if job.status != TrainingJob.Status.SUCCEEDED:
        raise TrainerError(f"training job {job.pk} {job.status}: {job.error}")
    version = model_serve(model=job.model_version)
    final = version.metrics.get("final", {})
    hit_rate = final.get("hits_at_1")
    ranked = (
        f", Hits@1 of {final.get('hits_candidates')} on {final.get('hits_contexts')} held-out turns "
        f"{100 * hit_rate:.1f} %"
        if isinstance(hit_rate, int | float)
        else ""
    )
    say(f"model {version.name} serves (validation loss {final.get('validation_loss')}{ranked})")
    return version
