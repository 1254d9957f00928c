"""In Debian's Chromium against the live server: what a person sees."""

import re

import pytest
from playwright.sync_api import Page, expect

from dialogs import services
from groundwork.accounts import demo_logins_ensure
from tests.e2e.helpers import log_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_demo_crowdworker_logs_in_and_reaches_work(page: Page, live_server, settings, tmp_path) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    crowdworker = next(login for login in demo_logins_ensure() if login.role == "crowdworker")

    log_in(page, live_server.url, crowdworker.username, crowdworker.password)

    expect(page).to_have_url(re.compile(r"/work/$"))
    expect(page.get_by_role("heading", name="Your work")).to_be_visible()
    expect(page.get_by_text("No campaigns are open to you yet")).to_be_visible()
    # The vendored htmx is served (whitenoise) and loaded.
    assert page.evaluate("typeof htmx !== 'undefined' && htmx.version") == "2.0.11"


def test_wrong_password_is_told_in_the_page(page: Page, live_server, settings, tmp_path) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    demo_logins_ensure()

    log_in(page, live_server.url, "crowdworker", "not the password")

    expect(page.get_by_role("alert")).to_contain_text("didn't match")
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))


def test_dialog_text_with_markup_is_shown_as_text(page: Page, live_server, settings, tmp_path) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    admin = next(login for login in demo_logins_ensure() if login.role == "admin")
    script = '<script>alert("x")</script>'
    image = "<img src=x onerror=alert(1)>"
    services.dialogs_import(
        records=services.parse_objects(
            [
                {
                    "id": "xss",
                    "purpose": "quality",
                    "turns": [{"speaker": "user", "text": script}, {"speaker": "model", "text": image}],
                }
            ]
        ),
        source="test",
    )
    dialogs_opened: list[str] = []
    page.on("dialog", lambda dialog: (dialogs_opened.append(dialog.message), dialog.dismiss()))

    log_in(page, live_server.url, admin.username, admin.password)
    page.goto(f"{live_server.url}/dialogs/xss/")

    transcript = page.get_by_role("list", name="Transcript")
    expect(transcript.get_by_text(script)).to_be_visible()
    expect(transcript.get_by_text(image)).to_be_visible()
    assert page.locator("main img").count() == 0
    page.goto(f"{live_server.url}/admin/dialogs/dialog/?q=xss")
    page.get_by_role("link", name="xss").click()
    expect(page.locator("textarea[name='turns-0-text']")).to_have_value(script)
    expect(page.locator("textarea[name='turns-1-text']")).to_have_value(image)
    assert dialogs_opened == []
