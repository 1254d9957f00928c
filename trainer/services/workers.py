"""Which worker process holds a dataset build, a training job or an evaluation, and whether it
still lives.

A worker that claims a row writes itself (``host:pid``) and a heartbeat into it; a row whose
heartbeat is older than ``TRAINING_STALE_SECONDS``, or whose process is gone from this host, is
lost, and the recovery of ``dataset_builds``, ``training_jobs`` and ``evaluation_runs`` takes it
over.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from trainer.models import DatasetVersion, Evaluation, TrainingJob

Job = TypeVar("Job", DatasetVersion, Evaluation)


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(job: TrainingJob | DatasetVersion | Evaluation) -> bool:
    """Whether the process that claimed ``job`` (a training job, a dataset build, an evaluation)
    still runs it: a fresh heartbeat and, when it ran on this host, a live process id."""
    if job.heartbeat_at is None or job.heartbeat_at < timezone.now() - timedelta(
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


@contextmanager
def heartbeat(model: type[DatasetVersion | Evaluation], pk: int) -> Iterator[None]:
    """While the block runs, a thread marks the row alive (``heartbeat_at``) a few times per
    ``TRAINING_STALE_SECONDS``, whatever the block is doing (training a tokenizer, scoring)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.TRAINING_STALE_SECONDS / 4):
                model.objects.filter(pk=pk).update(heartbeat_at=timezone.now())
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{model.__name__}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def job_fail(job: DatasetVersion | Evaluation, error: str) -> None:
    """Mark a dataset build or an evaluation failed with ``error``."""
    type(job).objects.filter(pk=job.pk).update(
        status=type(job).Status.FAILED, error=error, finished_at=timezone.now()
    )


def job_claim(
    rows: QuerySet[Job], pk: int, worker: str, *, finished: Sequence[str], doing: str, **start: Any
) -> Job | None:
    """Take the row ``pk`` of ``rows`` (a dataset build, an evaluation) for ``worker``, or None when
    it must not run here: ``finished``, run by a live worker (a duplicate delivery), or out of
    attempts (then failed with the cause; ``doing``: "building", "running"). A row left running by
    a worker that died (a redelivered message) is taken over. ``start``: fields set as it starts."""
    with transaction.atomic():
        job = rows.select_for_update().get(pk=pk)
        if job.status in finished:
            return None
        if job.status == type(job).Status.RUNNING and worker_alive(job):
            return None
        if job.attempts >= settings.TRAINING_MAX_ATTEMPTS:
            job_fail(
                job,
                f"the worker {doing} it ({job.worker}) died {job.attempts} time(s); "
                f"giving up after {settings.TRAINING_MAX_ATTEMPTS} attempts",
            )
            return None
        job.status = type(job).Status.RUNNING
        job.worker, job.heartbeat_at = worker, timezone.now()
        job.attempts += 1
        for name, value in start.items():
            setattr(job, name, value)
        job.save(update_fields=["status", "worker", "heartbeat_at", "attempts", *start])
        return job


def job_recover(model: type[Job], *, doing: str, enqueue: Callable[[Job], Any]) -> list[Job]:
    """The rows of ``model`` marked running whose worker is gone: queued again (``enqueue``) or
    failed when out of attempts. Run when a worker starts."""
    recovered = []
    running = model.objects.filter(status=model.Status.RUNNING)
    for pk in running.values_list("pk", flat=True):
        with transaction.atomic():
            job = model.objects.select_for_update().get(pk=pk)
            if job.status != model.Status.RUNNING or worker_alive(job):
                continue
            if job.attempts >= settings.TRAINING_MAX_ATTEMPTS:
                job_fail(job, f"the worker {doing} it ({job.worker}) was lost; out of attempts")
            else:
                job.status, job.worker = model.Status.PENDING, ""
                job.save(update_fields=["status", "worker"])
                enqueue(job)
            recovered.append(job)
    return recovered
