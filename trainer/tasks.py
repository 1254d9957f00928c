"""The trainer's Celery tasks: thin, each calls one worker-side service. The services queue them
by name (``trainer.services.requests``), so nothing here is imported by the web process."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from groundwork.queueing import JobTask
from trainer.services import dataset_builds, evaluation_runs, training_jobs


@shared_task(base=JobTask, job_failed=dataset_builds.dataset_failed, acks_late=True)
def dataset_build_task(dataset_id: int) -> None:
    dataset_builds.dataset_build(dataset_id=dataset_id)


# acks_late + reject_on_worker_lost (settings): a worker process killed mid-run gives the message
# back, and the redelivered task resumes the job from its checkpoint (see training_jobs).
@shared_task(
    base=JobTask, job_failed=training_jobs.training_failed, acks_late=True, reject_on_worker_lost=True
)
def training_run_task(job_id: int) -> None:
    training_jobs.training_run(job_id=job_id)


# On the training queue (trainer.services.evaluations): a long batch of model calls. A worker
# killed mid-run gives the message back, and the redelivered task resumes the evaluation.
@shared_task(
    base=JobTask, job_failed=evaluation_runs.evaluation_failed, acks_late=True, reject_on_worker_lost=True
)
def evaluation_run_task(evaluation_id: int) -> None:
    evaluation_runs.evaluation_run(evaluation_id=evaluation_id)


@worker_ready.connect
def _recover(**kwargs: Any) -> None:
    """A worker that starts takes up the builds, jobs and evaluations whose worker died (kill -9
    of a whole worker): queued again, or failed when out of attempts."""
    dataset_builds.dataset_recover()
    training_jobs.training_recover()
    evaluation_runs.evaluation_recover()
