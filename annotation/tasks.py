from __future__ import annotations

from celery import shared_task

from annotation import chat, services
from groundwork.queueing import JobTask


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def aggregate_item_task(item_id: int) -> None:
    services.aggregate_item(item_id=item_id)


@shared_task(
    base=JobTask,
    job_failed=services.aggregation_failed,
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=3,
)
def aggregate_campaign_task(run_id: int) -> None:
    services.aggregation_run(run_id=run_id)


@shared_task(base=JobTask, job_failed=chat.chat_failed, acks_late=True)
def respond_task(dialog_id: int) -> None:
    """The serving model answers a chat (sent to queue ``inference`` by ``chat.chat_say``).

    Not retried: whatever the responder raises (no model serves, a broken checkpoint) is recorded
    on the chat (``chat_failed``) so the worker's page stops waiting and says so, and the worker
    asks again.
    """
    chat.chat_respond(dialog_id=dialog_id)
