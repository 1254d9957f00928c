from __future__ import annotations

from celery import shared_task

from toolset import services


# OSError covers a writer lock held too long by another process (filelock.Timeout).
@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def search_index_sync_task(urls: list[str] | None = None) -> None:
    """Bring this host's search index in step with the database, and re-index ``urls`` as the
    database has them (idempotent; imports send none: their documents' generation says it)."""
    services.search_index_sync(urls=urls or [])
