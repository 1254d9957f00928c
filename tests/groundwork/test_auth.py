import pytest
from django.conf import settings

from groundwork.roles import Role
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
