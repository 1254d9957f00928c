"""The transcript pages ``/dialogs/`` and ``/dialogs/<id>/``, and the Django admin of dialogs."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse

from dialogs.models import Dialog
from dialogs.services import dialogs_import, parse_objects
from groundwork.roles import Role
from tests.factories import UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db

SCRIPT = '<script>alert("x")</script>'
IMG = "<img src=x onerror=alert(1)>"
SCRIPT_ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
IMG_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
# The id carries a payload too, since the list page shows ids, not turn texts.
XSS_ID = f"xss:{SCRIPT}{IMG}"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def transcript() -> Dialog:
    return dialog_with_turns(
        ["Where is the museum?", "Two blocks north,\nthen left."],
        external_id="city:tour/1",
        purpose="quality",
    )


@pytest.fixture
def hostile() -> Dialog:
    """A dialog imported the way users import them, with HTML in its id and turns."""
    record = {
        "id": XSS_ID,
        "purpose": "safety",
        "mode": "adversarial",
        "model_version": IMG,
        "turns": [{"speaker": "user", "text": SCRIPT}, {"speaker": "model", "text": IMG}],
        "meta": {},
    }
    dialogs_import(records=parse_objects([record]), source=SCRIPT)
    return Dialog.objects.get(external_id=XSS_ID)


LIST_URL = "/dialogs/"


def detail_url(dialog: Dialog) -> str:
    return f"/dialogs/{quote(dialog.external_id, safe='/:')}/"


def assert_no_raw_html(html: str) -> None:
    assert "<script>alert" not in html
    assert "<img src=x" not in html


@pytest.mark.parametrize("role", [Role.ADMIN, Role.RESEARCHER])
def test_admins_and_researchers_read_the_transcript(
    role: Role, users: dict[Role, Any], transcript: Dialog
) -> None:
    client = logged_in(users[role])

    response = client.get(detail_url(transcript))

    assert response.status_code == 200
    html = response.content.decode()
    assert "city:tour/1" in html
    assert "Where is the museum?" in html
    assert "Two blocks north,<br>then left." in html
    assert html.index("Where is the museum?") < html.index("Two blocks north")
    assert f'href="{LIST_URL}"' in html  # back to the list page, not to the JSON API


@pytest.mark.parametrize("role", [Role.ADMIN, Role.RESEARCHER])
def test_admins_and_researchers_see_the_list(role: Role, users: dict[Role, Any], transcript: Dialog) -> None:
    client = logged_in(users[role])

    response = client.get(LIST_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "city:tour/1" in html
    # Each dialog links to its transcript page (not to the JSON API).
    assert 'href="/dialogs/city:tour/1/"' in html
    assert logged_in(users[role]).get("/dialogs/city:tour/1/").status_code == 200


def test_the_list_filters_by_purpose(users: dict[Role, Any], transcript: Dialog) -> None:
    dialog_with_turns(["Is this safe?"], external_id="safety-only", purpose="safety")
    client = logged_in(users[Role.ADMIN])

    html = client.get(LIST_URL, {"purpose": "safety"}).content.decode()

    assert "safety-only" in html
    assert "city:tour/1" not in html


def test_an_unknown_dialog_is_404(users: dict[Role, Any], transcript: Dialog) -> None:
    client = logged_in(users[Role.ADMIN])

    assert client.get("/dialogs/city:tour/").status_code == 404


@pytest.mark.parametrize("path", ["/dialogs/a%00b/", "/dialogs/a%0Ab/"])
def test_a_dialog_id_with_a_control_character_is_404_not_a_database_error(
    users: dict[Role, Any], transcript: Dialog, path: str
) -> None:
    """PostgreSQL cannot even compare a NUL: the lookup was a 500. No id holds one."""
    client = logged_in(users[Role.ADMIN])

    assert client.get(path).status_code == 404


def test_a_crowdworker_is_refused(users: dict[Role, Any], transcript: Dialog) -> None:
    client = logged_in(users[Role.CROWDWORKER])

    list_response = client.get(LIST_URL)
    detail_response = client.get(detail_url(transcript))

    assert list_response.status_code == 403
    assert detail_response.status_code == 403
    assert "Where is the museum?" not in detail_response.content.decode()


def test_anonymous_users_are_sent_to_the_login_page(transcript: Dialog) -> None:
    client = Client()

    for url in [LIST_URL, detail_url(transcript)]:
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login") + "?next=")


def test_the_detail_page_escapes_html_in_a_dialog(users: dict[Role, Any], hostile: Dialog) -> None:
    response = logged_in(users[Role.RESEARCHER]).get(detail_url(hostile))

    assert response.status_code == 200
    html = response.content.decode()
    assert SCRIPT_ESCAPED in html
    assert IMG_ESCAPED in html
    assert_no_raw_html(html)


def test_the_list_page_escapes_html_in_a_dialog(users: dict[Role, Any], hostile: Dialog) -> None:
    response = logged_in(users[Role.RESEARCHER]).get(LIST_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert SCRIPT_ESCAPED in html
    assert IMG_ESCAPED in html
    assert_no_raw_html(html)
    # The link to its transcript works, whatever the id holds.
    link = re.search(r'href="(/dialogs/xss:[^"]+)"', html)
    assert link is not None
    detail = logged_in(users[Role.RESEARCHER]).get(link.group(1))
    assert detail.status_code == 200
    assert SCRIPT_ESCAPED in detail.content.decode()


@pytest.mark.parametrize("who", ["admin-role", "superuser"])
def test_the_admin_change_page_escapes_html_in_a_dialog(
    who: str, users: dict[Role, Any], hostile: Dialog
) -> None:
    user = users[Role.ADMIN] if who == "admin-role" else UserFactory(is_staff=True, is_superuser=True)

    response = logged_in(user).get(f"/admin/dialogs/dialog/{hostile.pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    # Turn texts are in <textarea>s, which Django escapes like any other text.
    assert f"{SCRIPT_ESCAPED}</textarea>" in html
    assert f"{IMG_ESCAPED}</textarea>" in html
    assert SCRIPT not in html
    assert_no_raw_html(html)


def test_the_admin_changelist_escapes_html_in_a_dialog(users: dict[Role, Any], hostile: Dialog) -> None:
    response = logged_in(users[Role.ADMIN]).get("/admin/dialogs/dialog/")

    assert response.status_code == 200
    html = response.content.decode()
    assert SCRIPT_ESCAPED in html
    assert_no_raw_html(html)


def test_a_crowdworker_cannot_open_the_dialog_admin(users: dict[Role, Any], hostile: Dialog) -> None:
    response = logged_in(users[Role.CROWDWORKER]).get(f"/admin/dialogs/dialog/{hostile.pk}/change/")

    assert response.status_code == 302
    assert "/admin/login/" in response.url
