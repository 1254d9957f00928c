"""Handing work to the Celery workers, the one way every app does it.

- ``enqueue`` sends a task after the transaction that asked for it commits (the worker must find
  the rows it is about). The task is named by its registered name (``"trainer.tasks.training_run_task"``),
  so a service never imports its app's ``tasks`` module, which imports the service (a task object
  works too). When the broker cannot take it, the request's rows are undone and
  ``TaskQueueUnavailable`` says so (a ``DomainError``: a JSON 503 with ``Retry-After`` for the
  API, a page for people, ``groundwork.http_errors``): no row is left ``pending`` for work that
  was never queued.
- ``JobTask`` is the base of tasks that carry a job row (a dataset build, an export, a chat
  answer): when the task raises, whatever the reason, the row is marked failed with the cause.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task
from django.conf import settings
from django.db import connections, transaction
from kombu.exceptions import OperationalError

from groundwork.errors import DomainError

logger = logging.getLogger(__name__)

# How long a request waits for the broker before it answers 503 (each of a few tries).
BROKER_TIMEOUT_SECONDS = 2.0
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}


class TaskQueueUnavailable(DomainError):
    """The broker is down: the work could not be queued, and nothing of the request was kept."""

    status = 503
    retry_after_seconds = 30
    default_message = "The task queue is down, so this could not be queued and nothing was saved; try again."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


@dataclass(frozen=True)
class Queued:
    """What ``enqueue`` registers to run after commit: sends ``task(*args)`` to the broker."""

    task: Any  # the task's registered name, or the task itself
    args: tuple[Any, ...]
    queue: str | None = None
    undo: Callable[[], Any] | None = None
    best_effort: bool = False

    @property
    def task_name(self) -> str:
        return self.task if isinstance(self.task, str) else self.task.name

    def __call__(self) -> None:
        try:
            self._signature().apply_async(
                args=self.args, queue=self.queue, retry=True, retry_policy=PUBLISH_RETRY_POLICY
            )
        except OperationalError as exc:
            if self.best_effort:
                logger.warning("could not queue %s%r (left for later): %s", self.task_name, self.args, exc)
                return
            logger.error("could not queue %s%r: %s", self.task_name, self.args, exc)
            if self.undo is not None:
                with transaction.atomic():
                    self.undo()
            raise TaskQueueUnavailable() from exc

    def _signature(self) -> Any:
        """A name becomes the app's signature of that task: the task itself where this process
        registered it (its options and ``task_always_eager`` hold), else a message sent by name
        (a web process, which never imports the workers' task modules)."""
        if not isinstance(self.task, str):
            return self.task
        from groundwork.celery import app

        return app.signature(self.task)


def enqueue(
    task: str | Task,
    *args: Any,
    queue: str | None = None,
    undo: Callable[[], Any] | None = None,
    best_effort: bool = False,
) -> None:
    """Send ``task(*args)`` (to ``queue``, else the task's own) once the current transaction
    commits, or at once outside one. ``task`` is its registered name, ``"<app>.tasks.<function>"``
    (``tests/groundwork/test_queueing.py`` checks that every name enqueued is a task). If the
    broker cannot take it, ``undo`` removes what was written for it, in a transaction of its own,
    and ``TaskQueueUnavailable`` is raised to the caller (out of its ``transaction.atomic`` block,
    after the commit) — unless the work is ``best_effort``: derived data that is recomputed
    elsewhere anyway, whose loss is only logged."""
    transaction.on_commit(Queued(task, args, queue=queue, undo=undo, best_effort=best_effort))


def broker_up() -> bool:
    """Whether the broker takes a connection now; the cause of a failure (it names hosts and
    users) goes to the log only."""
    from groundwork.celery import app

    try:
        with app.connection_for_write(settings.CELERY_BROKER_URL) as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS
            )
    except Exception:  # any failure to connect means "down" (kombu raises several kinds)
        transport = settings.CELERY_BROKER_URL.split(":", 1)[0]
        logger.warning("the broker (%s) is down", transport, exc_info=True)
        return False
    return True


def check_task_queue() -> None:
    """Raise ``TaskQueueUnavailable`` unless the broker answers now: for work whose rows cannot
    simply be undone afterwards (an import that updated documents in place)."""
    if not broker_up():
        raise TaskQueueUnavailable()


class JobTask(Task):
    """A task about one job row, whose first parameter is the row's id (``dataset_id``...).

    When the task raises (after its retries), ``job_failed`` — a service set in the task's
    options, called with that parameter and ``error`` — marks the row failed with the cause.
    The services record the failures they expect themselves; this is the net for the rest (a
    database error while recording, a bug), run on a fresh database connection.
    """

    job_failed: Callable[..., None] | None = None

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        failed = type(self).job_failed  # through the class: a plain function, not a method
        if failed is None:
            return
        name, job_id = next(iter(inspect.signature(self.run).bind(*args, **kwargs).arguments.items()))
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for connection in connections.all(initialized_only=True):
            if not connection.in_atomic_block:  # (an eager call inside a test's transaction)
                connection.close()  # whatever state the failure left it in
        try:
            failed(**{name: job_id}, error=error)
        except Exception:  # the database itself may be what failed: the log keeps the cause
            logger.exception(
                "%s[%s]: could not record the failure of %s %s", self.name, task_id, name, job_id
            )
