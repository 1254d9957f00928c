"""Pages under the Content-Security-Policy in Debian's Chromium: their scripts still run (no inline
script or handler is left), Swagger UI and the admin included. ``csp_violations`` (conftest)
fails any test whose pages had something blocked."""

import re

import pytest
from playwright.sync_api import Page, expect

from groundwork.accounts import demo_logins_ensure
from tests.e2e.helpers import log_in
from tests.factories import dialog_with_turns

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin(page: Page, live_server, settings, tmp_path) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    login = next(login for login in demo_logins_ensure() if login.role == "admin")
    log_in(page, live_server.url, login.username, login.password)


def test_the_dialog_filter_submits_itself_on_change(page: Page, live_server, admin) -> None:
    dialog_with_turns(["Hi", "Hello"], external_id="q-1", purpose="quality")
    dialog_with_turns(["Hi", "Hello"], external_id="p-1", purpose="pretrain")
    page.goto(f"{live_server.url}/dialogs/")
    expect(page.get_by_role("link", name="p-1")).to_be_visible()

    page.get_by_label("Purpose").select_option("quality")

    expect(page).to_have_url(re.compile(r"/dialogs/\?purpose=quality$"))
    expect(page.get_by_role("link", name="q-1")).to_be_visible()
    expect(page.get_by_role("link", name="p-1")).to_have_count(0)


def test_swagger_ui_renders_the_api(page: Page, live_server, admin) -> None:
    page.goto(f"{live_server.url}/api/docs/")

    expect(page.get_by_role("heading", name=re.compile("Groundwork API"))).to_be_visible()
    expect(page.get_by_text("/api/v1/auth/token/").first).to_be_visible()


def test_the_admin_works(page: Page, live_server, admin) -> None:
    page.goto(f"{live_server.url}/admin/dialogs/dialog/add/")

    expect(page.get_by_role("heading", name="Add dialog")).to_be_visible()
    # The admin's own scripts ran: the inline formset's "add another" link is theirs.
    expect(page.get_by_role("link", name=re.compile("Add another"))).to_be_visible()
