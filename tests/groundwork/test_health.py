import pytest
from django.db import connection


@pytest.mark.django_db
def test_healthz_reports_database_and_broker_up(client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True, "vendor": connection.vendor, "ms": body["database"]["ms"]}
    assert body["broker"]["ok"] is True


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_down(client, settings) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["broker"]["ok"] is False
    assert "refused" in body["broker"]["error"].lower()
    assert body["database"]["ok"] is True


@pytest.mark.django_db(transaction=True)
def test_healthz_is_503_when_the_database_is_down(client, monkeypatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("points the PostgreSQL connection at a closed port")
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")
    try:
        response = client.get("/healthz")
    finally:
        connection.close()

    assert response.status_code == 503
    body = response.json()
    assert body["database"]["ok"] is False
    assert body["broker"]["ok"] is True
