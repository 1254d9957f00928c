"""/healthz: is the platform able to serve? Checks the database and the Celery broker."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from groundwork.celery import app as celery_app

BROKER_TIMEOUT_S = 2.0


def database_status() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "down"; the cause is reported
        return {"ok": False, "vendor": connection.vendor, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "vendor": connection.vendor, "ms": round((time.perf_counter() - started) * 1000, 1)}


def broker_status() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            transport = conn.transport_cls
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:
        return {
            "ok": False,
            "transport": settings.CELERY_BROKER_URL.split(":", 1)[0],
            "error": f"{type(exc).__name__}: {exc}",
        }
    return {"ok": True, "transport": str(transport), "ms": round((time.perf_counter() - started) * 1000, 1)}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Public on purpose (load balancers ask it); says nothing beyond up or down and why."""
    database = database_status()
    broker = broker_status()
    ok = database["ok"] and broker["ok"]
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "database": database, "broker": broker},
        status=200 if ok else 503,
    )
