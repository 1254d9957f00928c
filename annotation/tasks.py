from __future__ import annotations

from celery import shared_task

from annotation import services


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def aggregate_item_task(item_id: int) -> None:
    services.aggregate_item(item_id=item_id)


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=3)
def aggregate_campaign_task(run_id: int) -> None:
    services.aggregation_run(run_id=run_id)
