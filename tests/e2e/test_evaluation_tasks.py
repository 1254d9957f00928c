"""An evaluation set's crowd tasks in Debian's Chromium against the live server: a worker writes the
next turn of a context (the human baseline), another compares two responses with the keyboard."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Campaign, Judgment
from annotation.services import evaluations
from dialogs.models import HUMAN_RESPONDER, EvaluationResponse
from groundwork.roles import Role
from tests.annotation.evaluation_helpers import answer_all, make_set
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_writes_the_next_turn_and_it_goes_up_for_rating(
    page: Page, live_server: Any, settings: Any, tmp_path: Any
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    evaluation_set = make_set(contexts=1)
    answer_all(evaluation_set, "gw-1")
    evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)
    evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None)
    writer = UserFactory(role=Role.CROWDWORKER)
    log_in(page, live_server.url, writer.username, DEFAULT_PASSWORD)

    page.get_by_role("link", name="Start mtb v1 · Human baseline").click()
    expect(page.get_by_role("list", name="Context")).to_contain_text("Question 0?")
    page.get_by_role("textbox", name="Your response").fill("Only on Sundays.")
    page.get_by_role("button", name="Submit").click()

    expect(page.get_by_role("status")).to_contain_text("Saved.")
    expect(page.get_by_role("heading", name="Nothing left for you in this campaign")).to_be_visible()
    written = EvaluationResponse.objects.get(responder=HUMAN_RESPONDER)
    assert written.turn.text == "Only on Sundays."
    ssi = Campaign.objects.get(evaluation_set=evaluation_set, kind=Campaign.Kind.SSI)
    assert ssi.items.filter(turn=written.turn, author=writer).exists()


def test_a_worker_compares_two_responses_with_the_keyboard(
    page: Page, live_server: Any, settings: Any, tmp_path: Any
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    evaluation_set = make_set(contexts=1)
    answer_all(evaluation_set, "gw-1")
    answer_all(evaluation_set, "gw-2")
    campaign = evaluations.pairwise_campaign_create(
        evaluation_set=evaluation_set, responder_a="gw-1", responder_b="gw-2", created_by=None
    ).campaign
    item = campaign.items.get()
    rater = UserFactory(role=Role.CROWDWORKER)
    log_in(page, live_server.url, rater.username, DEFAULT_PASSWORD)

    page.get_by_role("link", name="Start mtb v1 · Side by side").click()
    expect(page.get_by_role("region", name="Response 1")).to_contain_text(item.response)
    expect(page.get_by_role("region", name="Response 2")).to_contain_text(item.pair["second"])
    page.wait_for_load_state()  # the deferred script listens to the keys
    page.keyboard.press("2")
    expect(page.get_by_role("radio", name=re.compile("^Response 2"))).to_be_checked()
    page.keyboard.press("Enter")

    expect(page.get_by_role("status")).to_contain_text("Saved.")
    second = "b" if item.pair["first"] == "a" else "a"
    assert Judgment.objects.get(item=item).value == {"a": "yes", "b": "no"}[second]
