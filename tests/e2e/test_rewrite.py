"""One rewrite in Debian's Chromium against the live server: search, cite, edit, submit."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Rewrite
from groundwork.roles import Role
from tests.annotation.helpers import BASE_RESPONSE, JAGUAR_URL, rewrite_campaign, rewrite_corpus
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_rewrite_with_a_search_and_a_citation(
    page: Page, live_server: Any, settings: Any, tmp_path: Any
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    rewrite_corpus()
    rewrite_campaign(name="Rewrite round 1")
    worker = UserFactory(role=Role.CROWDWORKER)
    log_in(page, live_server.url, worker.username, DEFAULT_PASSWORD)
    expect(page).to_have_url(re.compile(r"/work/$"))

    page.get_by_role("link", name="Start Rewrite round 1").click()
    expect(page.get_by_role("region", name="Response to check")).to_contain_text(BASE_RESPONSE)
    page.wait_for_load_state()
    page.evaluate("window.__marker = 1")
    rewrite = page.get_by_role("textbox", name="Rewrite")
    expect(rewrite).to_be_hidden()
    page.get_by_role("group", name="External claims").get_by_role("radio", name="Yes").check()
    page.get_by_role("group", name="Common knowledge").get_by_role("radio", name=re.compile("^No")).check()
    expect(rewrite).to_have_value(BASE_RESPONSE)

    page.get_by_role("searchbox", name="Search query").fill("largest cat Americas")
    page.get_by_role("button", name="Search", exact=True).click()
    cite = page.get_by_role("button", name=re.compile("^Cite")).first
    expect(cite).to_be_visible()
    assert page.evaluate("window.__marker") == 1  # the results came by htmx, no page load
    rewrite.fill("The jaguar is the largest cat in the Americas.")
    cite.click()
    expect(rewrite).to_have_value(f"The jaguar is the largest cat in the Americas. [Jaguar]({JAGUAR_URL})")
    rewrite.press("End")
    rewrite.type(" It hunts along rivers.")
    page.get_by_role("button", name="Submit").click()

    expect(page.get_by_role("status")).to_contain_text("Saved.")
    stored = Rewrite.objects.get(assignment__worker=worker)
    assert stored.cited_urls == [JAGUAR_URL]
    assert (
        stored.text
        == f"The jaguar is the largest cat in the Americas. [Jaguar]({JAGUAR_URL}) It hunts along rivers."
    )
    assert len(stored.tool_call_ids) == 1
