"""Issue 17, part 1, in Chromium: an admin creates a campaign that stops asking once the answer is
decided, and its page says how many judgments that saved."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Campaign
from annotation.services import assignments
from groundwork.roles import Role
from tests.annotation.helpers import YES3
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_admin_creates_a_campaign_that_stops_once_decided_and_sees_what_it_saved(
    page: Page, live_server: Any
) -> None:
    dialog_with_turns(["Hi", "Hello"], external_id="q1", purpose="quality")
    admin = UserFactory(role=Role.ADMIN)
    log_in(page, live_server.url, admin.username, DEFAULT_PASSWORD)

    page.goto(f"{live_server.url}/admin/annotation/campaign/add/")
    page.get_by_label("Name").fill("Stops early")
    page.get_by_label("Kind").select_option("ssi")
    page.get_by_label("Purpose").select_option("quality")
    page.get_by_label("Stop asking once the answer is decided").check()
    page.get_by_role("button", name="Create campaign").click()
    expect(page.get_by_text("created with 1 items")).to_be_visible()

    campaign = Campaign.objects.get(name="Stops early")
    assert campaign.stop_when_decided
    for _ in range(3):
        worker = UserFactory(role=Role.CROWDWORKER)
        lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)
    page.reload()
    expect(page.locator("#decided")).to_contain_text("1 items got their labels before their last rater")
    expect(page.locator("#decided")).to_contain_text("2 judgments saved")
