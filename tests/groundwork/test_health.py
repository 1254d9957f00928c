import logging

import pytest
from django.db import connection


@pytest.mark.django_db
def test_healthz_reports_database_and_broker_up(client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_down_and_tells_the_cause_only_to_the_log(
    client, settings, caplog
) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    with caplog.at_level(logging.WARNING, logger="groundwork.health"):
        response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "broker": "down"}
    assert "refused" in caplog.text.lower()
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_healthz_is_503_when_the_database_is_down_without_giving_hosts_or_users_away(
    client, monkeypatch, caplog
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("points the PostgreSQL connection at a closed port")
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")
    try:
        with caplog.at_level(logging.WARNING, logger="groundwork.health"):
            response = client.get("/healthz")
    finally:
        connection.close()

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "down", "broker": "ok"}
    # The cause (host, port, user) is in the server's log, not in the public answer.
    assert "OperationalError" in caplog.text
    assert "port 1" in caplog.text
