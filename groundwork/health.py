"""/healthz: is the platform able to serve? Checks the database and the Celery broker.

Public (load balancers ask it), so it answers only up or down for each part: the cause of a
failure names hosts, ports and users, and goes to the server's log instead.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from groundwork.celery import app as celery_app

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 2.0


def database_up() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # any failure means "down"; the cause is logged
        logger.warning("health check: the database (%s) is down", connection.vendor, exc_info=True)
        return False
    return True


def broker_up() -> bool:
    try:
        with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_S)
    except Exception:
        transport = settings.CELERY_BROKER_URL.split(":", 1)[0]
        logger.warning("health check: the broker (%s) is down", transport, exc_info=True)
        return False
    return True


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """``{"status": "ok"|"unavailable", "database": "ok"|"down", "broker": "ok"|"down"}``; 503 when down."""
    parts = {"database": database_up(), "broker": broker_up()}
    ok = all(parts.values())
    return JsonResponse(
        {
            "status": "ok" if ok else "unavailable",
            **{name: "ok" if up else "down" for name, up in parts.items()},
        },
        status=200 if ok else 503,
    )
