import os
import subprocess
import sys

import pytest
from django.conf import settings

from groundwork.roles import Role
from tests.conftest import ROOT, database_url
from tests.factories import DEFAULT_PASSWORD, UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db


def test_crowdworker_logs_in_and_lands_on_work(client) -> None:
    user = UserFactory(role=Role.CROWDWORKER)

    response = client.post(
        "/accounts/login/", {"username": user.username, "password": DEFAULT_PASSWORD}, follow=True
    )

    assert response.redirect_chain[-1][0] == "/work/"
    assert b"No campaigns are open to you yet" in response.content


@pytest.mark.parametrize("role", [Role.ADMIN, Role.RESEARCHER])
def test_admins_and_researchers_land_on_the_admin(client, role) -> None:
    user = UserFactory(role=role)

    response = client.post("/accounts/login/", {"username": user.username, "password": DEFAULT_PASSWORD})
    response = client.get(response["Location"])

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_wrong_password_shows_an_error_and_stays_logged_out(client) -> None:
    user = UserFactory(role=Role.CROWDWORKER)

    response = client.post("/accounts/login/", {"username": user.username, "password": "nope"})

    assert response.status_code == 200
    assert b"didn't match" in response.content
    assert client.get("/work/").status_code == 302


def test_logout_is_a_post_and_ends_the_session(client) -> None:
    client.force_login(UserFactory(role=Role.CROWDWORKER))

    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    assert client.get("/work/")["Location"].startswith("/accounts/login/")


def test_token_endpoint_returns_a_token_that_authenticates_api_calls(api_client) -> None:
    admin = UserFactory(role=Role.ADMIN)
    dialog_with_turns(["hello", "hi"], external_id="d-1")

    response = api_client.post(
        "/api/v1/auth/token/", {"username": admin.username, "password": DEFAULT_PASSWORD}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    listed = api_client.get("/api/v1/dialogs/")
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()["results"]] == ["d-1"]
    # The same user gets the same token again.
    again = api_client.post(
        "/api/v1/auth/token/", {"username": admin.username, "password": DEFAULT_PASSWORD}, format="json"
    )
    assert again.json()["token"] == token


def test_token_endpoint_refuses_bad_credentials(api_client) -> None:
    user = UserFactory(role=Role.ADMIN)

    response = api_client.post(
        "/api/v1/auth/token/", {"username": user.username, "password": "wrong"}, format="json"
    )

    assert response.status_code == 400
    assert "Unable to log in" in response.json()["detail"]


def test_a_bad_token_is_401(api_client) -> None:
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert api_client.get("/api/v1/dialogs/").status_code == 401


def test_repeated_failed_logins_lock_the_login_page_even_for_the_right_password(client) -> None:
    user = UserFactory(role=Role.CROWDWORKER)
    statuses = [
        client.post("/accounts/login/", {"username": user.username, "password": f"wrong{i}"}).status_code
        for i in range(settings.AXES_FAILURE_LIMIT)
    ]

    assert statuses[:-1] == [200] * (settings.AXES_FAILURE_LIMIT - 1)
    assert statuses[-1] == 429
    locked = client.post("/accounts/login/", {"username": user.username, "password": DEFAULT_PASSWORD})
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    # Another account from the same address is not locked.
    other = UserFactory(role=Role.CROWDWORKER)
    response = client.post("/accounts/login/", {"username": other.username, "password": DEFAULT_PASSWORD})
    assert response.status_code == 302


def test_repeated_failed_token_requests_are_locked_out_too(api_client) -> None:
    user = UserFactory(role=Role.ADMIN)
    for i in range(settings.AXES_FAILURE_LIMIT):
        api_client.post(
            "/api/v1/auth/token/", {"username": user.username, "password": f"x{i}"}, format="json"
        )

    response = api_client.post(
        "/api/v1/auth/token/", {"username": user.username, "password": DEFAULT_PASSWORD}, format="json"
    )

    assert response.status_code == 429
    assert "Too many failed logins" in response.json()["detail"]


# --- client addresses: throttles and lockouts ----------------------------------------------------

TOKEN_URL = "/api/v1/auth/token/"
PROXY = "10.0.0.1"  # REMOTE_ADDR of every request that comes through the reverse proxy


@pytest.fixture
def token_rate(monkeypatch) -> None:
    """The token throttle at 3 requests a minute (DRF reads the rates once, at import)."""
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(
        ScopedRateThrottle, "THROTTLE_RATES", {**ScopedRateThrottle.THROTTLE_RATES, "token": "3/min"}
    )


@pytest.fixture
def one_proxy(settings) -> None:
    """TRUSTED_PROXIES=1 as settings.py turns it into the settings of DRF and django-axes."""
    settings.TRUSTED_PROXIES = 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


def token_request(api_client, username: str, password: str, **headers: str):
    return api_client.post(TOKEN_URL, {"username": username, "password": password}, format="json", **headers)


def test_the_token_throttle_ignores_x_forwarded_for_without_a_trusted_proxy(api_client, token_rate) -> None:
    codes = [token_request(api_client, f"nobody{i}", "x").status_code for i in range(4)]
    assert codes == [400, 400, 400, 429]

    # The same client claiming to be ten other addresses is still the same client.
    spoofed = [
        token_request(api_client, f"other{i}", "x", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code
        for i in range(10)
    ]

    assert spoofed == [429] * 10


def test_behind_a_trusted_proxy_each_client_has_its_own_throttle(api_client, token_rate, one_proxy) -> None:
    client_a = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    codes = [token_request(api_client, f"nobody{i}", "x", **client_a).status_code for i in range(4)]
    assert codes == [400, 400, 400, 429]
    # A forged X-Forwarded-For: the proxy appends the address it saw, and only that one counts.
    forged = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "203.0.113.9, 198.51.100.7"}
    assert token_request(api_client, "nobody", "x", **forged).status_code == 429

    client_b = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.8"}
    assert token_request(api_client, "nobody", "x", **client_b).status_code == 400


def test_behind_a_trusted_proxy_one_client_cannot_lock_an_account_out_for_everybody(
    api_client, one_proxy
) -> None:
    user = UserFactory(role=Role.ADMIN)
    attacker = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    for i in range(settings.AXES_FAILURE_LIMIT):
        token_request(api_client, user.username, f"guess{i}", **attacker)
    assert token_request(api_client, user.username, DEFAULT_PASSWORD, **attacker).status_code == 429
    forged = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.8, 198.51.100.7"}
    assert token_request(api_client, user.username, DEFAULT_PASSWORD, **forged).status_code == 429

    # The account's owner, from their own address through the same proxy, still gets in.
    owner = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.8"}
    response = token_request(api_client, user.username, DEFAULT_PASSWORD, **owner)

    assert response.status_code == 200, response.content
    assert response.json()["token"]


@pytest.mark.django_db(transaction=True)
def test_a_throttle_counted_in_one_process_holds_in_another(api_client, token_rate) -> None:
    """gunicorn runs several web processes: they must count in one shared cache, not each its own."""
    codes = [token_request(api_client, f"nobody{i}", "x").status_code for i in range(3)]
    assert codes == [400, 400, 400]

    code = (
        "import django; django.setup(); from django.test import Client; "
        f"print(Client().post({TOKEN_URL!r}, {{'username': 'nobody', 'password': 'x'}}, "
        "content_type='application/json').status_code)"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "TOKEN_THROTTLE_RATE": "3/min",
        "ALLOWED_HOSTS": "testserver",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "429", result.stdout + result.stderr


# --- API tokens: revocation and lifetime -------------------------------------------------------


def obtain_token(api_client, user) -> str:
    response = token_request(api_client, user.username, DEFAULT_PASSWORD)
    assert response.status_code == 200, response.content
    return response.json()["token"]


def test_the_owner_revokes_their_token(api_client) -> None:
    from rest_framework.authtoken.models import Token

    user = UserFactory(role=Role.ADMIN)
    token = obtain_token(api_client, user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = api_client.delete(TOKEN_URL)

    assert response.status_code == 204
    assert not Token.objects.filter(user=user).exists()
    refused = api_client.get("/api/v1/dialogs/")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Invalid token."}
    # Logging in again gives a new token.
    api_client.credentials()
    assert obtain_token(api_client, user) != token


def test_revoking_needs_a_token_or_a_session(api_client) -> None:
    assert api_client.delete(TOKEN_URL).status_code == 401


@pytest.mark.parametrize(("hours_old", "expected"), [(1, 200), (25, 401)])
def test_a_token_expires_after_its_lifetime(api_client, settings, hours_old, expected) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    settings.API_TOKEN_LIFETIME = timedelta(hours=24)
    user = UserFactory(role=Role.ADMIN)
    token = obtain_token(api_client, user)
    Token.objects.filter(key=token).update(created=timezone.now() - timedelta(hours=hours_old))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = api_client.get("/api/v1/dialogs/")

    assert response.status_code == expected, response.content
    if expected == 401:
        assert response.json() == {"detail": "Token expired."}
        assert response["WWW-Authenticate"] == "Token"


def test_after_expiry_the_token_endpoint_issues_a_fresh_token(api_client, settings) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    settings.API_TOKEN_LIFETIME = timedelta(hours=24)
    user = UserFactory(role=Role.ADMIN)
    old = obtain_token(api_client, user)
    Token.objects.filter(key=old).update(created=timezone.now() - timedelta(days=2))
    # A client that still sends the expired token along is not refused.
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {old}")

    fresh = obtain_token(api_client, user)

    assert fresh != old
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {fresh}")
    assert api_client.get("/api/v1/dialogs/").status_code == 200
    assert list(Token.objects.filter(user=user).values_list("key", flat=True)) == [fresh]


def test_the_token_fast_path_checks_expiry_in_its_one_query(
    api_client, settings, django_assert_num_queries
) -> None:
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    if connection.vendor != "postgresql":
        pytest.skip("the hand-written token query runs on PostgreSQL")
    settings.API_TOKEN_LIFETIME = timedelta(hours=24)
    user = UserFactory(role=Role.ADMIN)
    token = obtain_token(api_client, user)
    Token.objects.filter(key=token).update(created=timezone.now() - timedelta(days=2))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    with django_assert_num_queries(1):
        response = api_client.get("/api/v1/dialogs/")

    assert response.status_code == 401
