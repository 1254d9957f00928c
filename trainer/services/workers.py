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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from trainer.models import DatasetVersion, Evaluation, TrainingJob


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
