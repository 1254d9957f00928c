"""Rating SSI items in Debian's Chromium against the live server: keyboard, cascade, htmx swap."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from playwright.sync_api import Page, expect

from annotation.models import Assignment, Campaign, Judgment
from annotation.services import campaigns
from annotation.services.campaigns import DialogFilters
from groundwork.roles import Role
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def campaign() -> Campaign:
    dialog_with_turns(
        ["Hi", "Hello there", "Tell me about Eurovision.", "Abba won in 1974."], purpose="quality"
    )
    return campaigns.campaign_create(name="SSI round 1", kind="ssi", filters=DialogFilters(purpose="quality"))


@pytest.fixture
def worker(page: Page, live_server: Any, settings: Any, tmp_path: Any) -> Any:
    """A crowdworker logged in through the login page."""
    settings.ARTIFACTS_DIR = tmp_path
    user = UserFactory(role=Role.CROWDWORKER)
    log_in(page, live_server.url, user.username, DEFAULT_PASSWORD)
    expect(page).to_have_url(re.compile(r"/work/$"))
    return user


def open_campaign(page: Page) -> None:
    page.get_by_role("link", name="Start").click()
    expect(page.get_by_role("heading", name="SSI round 1")).to_be_visible()
    page.wait_for_load_state()  # the deferred scripts have run: the keys are listened to


def test_rating_with_the_keyboard_swaps_in_the_next_item(page: Page, campaign: Campaign, worker: Any) -> None:
    expect(page.get_by_role("row", name=re.compile("SSI round 1"))).to_contain_text("2")
    open_campaign(page)
    expect(page.get_by_text("Done today: 0 · Left: 2")).to_be_visible()
    expect(page.get_by_role("region", name="Response to rate")).to_contain_text("Hello there")
    expect(page.get_by_role("list", name="Context")).to_contain_text("Hi")
    page.evaluate("window.__marker = 1")

    for _ in range(3):
        page.keyboard.press("1")
    for name in ("Sensible", "Specific", "Interesting"):
        expect(page.get_by_role("group", name=name).get_by_role("radio", name="Yes")).to_be_checked()
    page.keyboard.press("Enter")

    expect(page.get_by_role("region", name="Response to rate")).to_contain_text("Abba won in 1974.")
    expect(page.get_by_text("Done today: 1 · Left: 1")).to_be_visible()
    assert page.evaluate("window.__marker") == 1  # no full page load
    first = Assignment.objects.get(worker=worker, state=Assignment.State.SUBMITTED)
    assert first.item.response == "Hello there"
    stored = {j.attribute: (j.value, j.raw_value) for j in Judgment.objects.filter(assignment=first)}
    assert stored == {
        "sensible": ("yes", "yes"),
        "specific": ("yes", "yes"),
        "interesting": ("yes", "yes"),
    }
    # The swapped-in item starts from its first question again, and the keys still work on it.
    expect(page.get_by_role("group", name="Specific")).to_be_hidden()
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Nothing left for you in this campaign")).to_be_visible()
    assert page.evaluate("window.__marker") == 1
    assert Judgment.objects.filter(assignment__worker=worker).count() == 6


def test_the_cascade_hides_questions_that_are_not_asked(page: Page, campaign: Campaign, worker: Any) -> None:
    open_campaign(page)
    sensible = page.get_by_role("group", name="Sensible")
    specific = page.get_by_role("group", name="Specific")
    interesting = page.get_by_role("group", name="Interesting")
    expect(sensible).to_be_visible()
    expect(specific).to_be_hidden()
    expect(interesting).to_be_hidden()

    page.keyboard.press("1")
    page.keyboard.press("1")
    expect(specific).to_be_visible()
    expect(interesting).to_be_visible()
    expect(interesting).to_have_attribute("aria-current", "step")

    # Changing Sensible to No takes the two later questions away again.
    sensible.get_by_role("radio", name="No").check()
    expect(specific).to_be_hidden()
    expect(interesting).to_be_hidden()
    page.keyboard.press("Enter")

    expect(page.get_by_role("region", name="Response to rate")).to_contain_text("Abba won in 1974.")
    first = Assignment.objects.get(worker=worker, state=Assignment.State.SUBMITTED)
    # The hidden questions were not sent; the cascade counts them "no".
    assert first.submission == {"sensible": "no"}
    stored = {j.attribute: (j.value, j.raw_value) for j in Judgment.objects.filter(assignment=first)}
    assert stored == {"sensible": ("no", "no"), "specific": ("no", ""), "interesting": ("no", "")}


def test_pressing_2_on_sensible_keeps_the_others_hidden_and_guidance_opens(
    page: Page, campaign: Campaign, worker: Any
) -> None:
    open_campaign(page)
    sensible = page.get_by_role("group", name="Sensible")
    expect(sensible).to_have_attribute("aria-current", "step")
    sensible.get_by_text("Guidance").click()
    expect(sensible.get_by_text("If in doubt, choose No.")).to_be_visible()

    page.keyboard.press("2")

    expect(sensible.get_by_role("radio", name="No")).to_be_checked()
    expect(page.get_by_role("group", name="Specific")).to_be_hidden()
    expect(page.get_by_role("group", name="Interesting")).to_be_hidden()


def test_enter_with_a_question_unanswered_says_which_and_sends_nothing(
    page: Page, campaign: Campaign, worker: Any
) -> None:
    open_campaign(page)
    page.keyboard.press("1")

    page.keyboard.press("Enter")

    expect(page.get_by_role("status").filter(has_text="Answer “Specific” first.")).to_be_visible()
    assert not Judgment.objects.exists()


def test_s_skips_the_item(page: Page, campaign: Campaign, worker: Any) -> None:
    open_campaign(page)
    page.evaluate("window.__marker = 1")

    page.keyboard.press("s")

    expect(page.get_by_role("region", name="Response to rate")).to_contain_text("Abba won in 1974.")
    expect(page.get_by_text("Skipped.")).to_be_visible()
    assert page.evaluate("window.__marker") == 1
    assert Assignment.objects.get(worker=worker, item__response="Hello there").state == "skipped"


def test_an_ended_session_sends_the_worker_to_log_in_and_back(
    page: Page, campaign: Campaign, worker: Any, live_server: Any
) -> None:
    open_campaign(page)
    Session.objects.all().delete()  # the session ended on the server; the CSRF cookie stays

    page.keyboard.press("2")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))
    assert not Judgment.objects.exists()
    page.get_by_label("Username").fill(worker.username)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("region", name="Response to rate")).to_contain_text("Hello there")


def test_keys_pressed_while_the_next_item_settles_still_swap(
    page: Page, campaign: Campaign, worker: Any
) -> None:
    """htmx wires swapped-in forms only when the swap settles; a fast rater must not fall back to a
    full page load in that window (a long settle delay makes the window wide)."""
    open_campaign(page)
    page.evaluate("window.__marker = 1; htmx.config.defaultSettleDelay = 2000")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(page.get_by_role("region", name="Response to rate")).to_contain_text("Abba won in 1974.")

    page.keyboard.press("2")
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Nothing left for you in this campaign")).to_be_visible()
    assert page.evaluate("window.__marker") == 1
    assert Judgment.objects.filter(assignment__worker=worker).count() == 6
