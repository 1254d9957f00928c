from __future__ import annotations

from celery import shared_task

from annotation import chat, services


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def aggregate_item_task(item_id: int) -> None:
    services.aggregate_item(item_id=item_id)


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=3)
def aggregate_campaign_task(run_id: int) -> None:
    services.aggregation_run(run_id=run_id)


@shared_task(acks_late=True)
def respond_task(dialog_id: int) -> None:
    """The serving model answers a chat (sent to queue ``inference`` by ``chat.chat_say``).

    Not retried: whatever the responder raises (no model serves, a broken checkpoint) is recorded
    on the chat so the worker's page stops waiting and says so, and the worker asks again.
    """
    try:
        chat.chat_respond(dialog_id=dialog_id)
    except Exception as exc:  # the responder is a plug-in: any failure must reach the page
        chat.chat_failed(dialog_id=dialog_id, error=exc)
        raise
