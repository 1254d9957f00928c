"""/healthz: is the platform able to serve? Checks the database and the Celery broker.

Public (load balancers ask it), so it answers only up or down for each part: the cause of a
failure names hosts, ports and users, and goes to the server's log instead.
"""

from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from groundwork.queueing import broker_up

logger = logging.getLogger(__name__)


def database_up() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # any failure means "down"; the cause is logged
        logger.warning("health check: the database (%s) is down", connection.vendor, exc_info=True)
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
