from __future__ import annotations

from celery import shared_task

from dialogs import services
from groundwork.queueing import JobTask


@shared_task(
    base=JobTask,
    job_failed=services.dialog_export_failed,
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=3,
)
def dialog_export_run_task(export_id: int) -> None:
    services.dialog_export_run(export_id=export_id)
