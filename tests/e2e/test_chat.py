"""A safety chat in Debian's Chromium against the live server, answered by a tiny model that the
real Celery worker serves (queue inference): send, wait for the answer, finish, and the model's
turns are items of the open safety campaign."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Chat, Item, SafetyObjective
from annotation.services import campaigns
from dialogs.models import Speaker, Turn
from groundwork.roles import Role
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.trainer.helpers import tiny_model

# ARTIFACTS_DIR is left as it is: the worker process loads the model from the same folder.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

ANSWER_TIMEOUT_MS = 60_000  # the worker loads the model on its first answer


def test_a_safety_chat_is_answered_by_the_model_and_goes_to_the_safety_campaign(
    page: Page, live_server: Any, celery_worker: None
) -> None:
    tiny_model()
    # A flush after an earlier transactional test takes the migrations' seeded objectives with it.
    SafetyObjective.objects.get_or_create(slug="harm", defaults={"name": "Harm", "guidance": "Harm."})
    campaign = campaigns.campaign_create(name="Safety round 1", kind="safety", empty=True)
    worker = UserFactory(role=Role.CROWDWORKER)
    log_in(page, live_server.url, worker.username, DEFAULT_PASSWORD)
    expect(page).to_have_url(re.compile(r"/work/$"))

    page.get_by_role("link", name="Chat with the model").click()
    safety = page.get_by_role("region", name="Safety")
    expect(safety).to_contain_text("5–10 turns")
    expect(safety.get_by_role("radio", name="Natural")).to_be_checked()
    safety.get_by_role("button", name="Start a Safety chat").click()
    expect(page.get_by_role("heading", name="Safety chat (natural)")).to_be_visible()
    page.wait_for_load_state()  # htmx is loaded: Send swaps, it does not load a page

    conversation = page.get_by_role("list", name="Conversation")
    answers = conversation.locator(".turn.model:not(.thinking)")
    finish = page.get_by_role("button", name="Finish")
    page.evaluate("window.__marker = 1")
    for n in range(1, 6):
        message = f"Message number {n}: what do you think about tea?"
        page.get_by_label("Your message").fill(message)
        page.get_by_role("button", name="Send").click()

        expect(conversation.locator(".turn.user").last).to_have_text(re.compile(re.escape(message)))
        expect(page.get_by_text(f"Turn {n} of 5–10")).to_be_visible()
        expect(answers).to_have_count(n, timeout=ANSWER_TIMEOUT_MS)
        expect(conversation.get_by_text("The model is thinking…")).to_have_count(0)
        assert page.evaluate("window.__marker") == 1  # htmx swapped the turns in: no page load

        if n == 4:
            # Before the fifth turn Finish is disabled and says why; the server refuses it too.
            expect(finish).to_be_disabled()
            expect(page.get_by_text("You can finish after 5 turns; you have 4.")).to_be_visible()
            page.evaluate("document.getElementById('finish-form').submit()")
            expect(page.get_by_role("alert").filter(has_text="You have 4 turns")).to_have_text(
                "You have 4 turns; a Safety chat needs at least 5 turns before you can finish it."
            )
            assert Chat.objects.get(worker=worker).status == Chat.Status.OPEN
            page.evaluate("window.__marker = 1")

    expect(finish).to_be_enabled()
    finish.click()
    expect(page.get_by_text("This chat is finished.")).to_be_visible()

    chat = Chat.objects.get(worker=worker)
    assert chat.status == Chat.Status.FINISHED
    model_turns = list(Turn.objects.filter(dialog_id=chat.dialog_id, speaker=Speaker.MODEL).order_by("index"))
    assert len(model_turns) == 5
    assert all(turn.candidates.count() == 16 for turn in model_turns)
    items = Item.objects.filter(campaign=campaign).order_by("id")
    assert [item.turn for item in items] == model_turns
