"""Celery tasks of the annotation engine: each loads by id and calls one service (its name is the
service's, with ``_task``). Services queue them by name (``groundwork.queueing.enqueue``)."""

from __future__ import annotations

from celery import shared_task

from annotation.services import chats, consensus, rater_models
from groundwork.queueing import JobTask


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def item_aggregate_task(item_id: int) -> None:
    consensus.item_aggregate(item_id=item_id)


@shared_task(
    base=JobTask,
    job_failed=consensus.aggregation_failed,
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=3,
)
def aggregation_run_task(run_id: int) -> None:
    consensus.aggregation_run(run_id=run_id)


@shared_task(
    base=JobTask,
    job_failed=consensus.rater_aggregation_failed,
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=3,
)
def rater_aggregation_run_task(run_id: int) -> None:
    """Dawid–Skene for a whole campaign (queued by ``consensus.rater_aggregation_request``)."""
    rater_models.rater_aggregation_run(run_id=run_id)


@shared_task(base=JobTask, job_failed=chats.chat_failed, acks_late=True)
def chat_respond_task(dialog_id: int) -> None:
    """The serving model answers a chat (sent to queue ``inference`` by ``chats.chat_say``).

    Not retried: whatever the responder raises (no model serves, a broken checkpoint) is recorded
    on the chat (``chat_failed``) so the worker's page stops waiting and says so, and the worker
    asks again.
    """
    chats.chat_respond(dialog_id=dialog_id)
