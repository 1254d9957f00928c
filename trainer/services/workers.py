"""Which worker process holds a dataset build or a training job, and whether it still lives.

A worker that claims a row writes itself (``host:pid``) and a heartbeat into it; a row whose
heartbeat is older than ``TRAINING_STALE_SECONDS``, or whose process is gone from this host, is
lost, and the recovery of ``dataset_builds`` and ``training_jobs`` takes it over.
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

from trainer.models import DatasetVersion, TrainingJob


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(job: TrainingJob | DatasetVersion) -> bool:
    """Whether the process that claimed ``job`` (a training job or a dataset build) still runs
    it: a fresh heartbeat and, when it ran on this host, a live process id."""
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
def heartbeat(model: type[DatasetVersion], pk: int) -> Iterator[None]:
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
