"""Issue 17, labels that know their raters, in Chromium: an admin aggregates a campaign with
Dawid–Skene from its page; the real worker fits it while the page shows its progress; the
Workers table then shows each rater's estimated accuracy beside their gold accuracy, with the
one rater far below the others flagged, and nobody blocked for it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Campaign, Item, RaterEstimate, WorkerQuality
from annotation.services import assignments, campaigns
from dialogs.models import Dialog
from groundwork.roles import Role
from tests.annotation.helpers import YES3, ssi_campaign
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db(transaction=True)

ITEMS = 40  # x 3 raters = 120 judgments: 24 from each of the 5 raters (the flag rule needs 20)
NOT_SENSIBLE = {"sensible": "no"}  # SSI's cascade counts specific and interesting "no" too


def truly_sensible(item: Item) -> bool:
    """What careful raters answer: every third response ("Answer 0.", "Answer 3."...) is not sensible."""
    return int(re.search(r"\d+", item.response).group()) % 3 != 0  # type: ignore[union-attr]


def rate_everything(campaign: Campaign, raters: dict[str, Any]) -> None:
    """The raters take turns, one item each, until nothing is left for them: the careful ones
    answer the truth, ``noisy`` the opposite on three items in four; everyone gets the gold
    (check) items right, so gold accuracy cannot tell them apart."""
    waiting = dict(raters)
    while waiting:
        for name, worker in list(waiting.items()):
            lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
            if lease is None:
                del waiting[name]
                continue
            item = lease.item
            if item.kind == Item.Kind.GOLD:
                answers = NOT_SENSIBLE
            else:
                sensible = truly_sensible(item)
                if name == "noisy" and item.pk % 4 != 0:
                    sensible = not sensible
                answers = YES3 if sensible else NOT_SENSIBLE
            assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=answers)


def test_an_admin_runs_dawid_skene_from_the_campaign_page_and_sees_the_noisy_rater_flagged(
    page: Page, live_server: Any, celery_worker: None
) -> None:
    campaign = ssi_campaign(items=ITEMS, raters=3, name="crowd")
    # A gold item every 10 leases; a rater under 70 % on them after 2 would be blocked.
    Campaign.objects.filter(pk=campaign.pk).update(gold_rate=0.1, gold_min=2, gold_threshold=0.7)
    campaign.refresh_from_db()
    for i in range(2):
        Item.objects.create(
            campaign=campaign,
            key=f"gold-{i}",
            kind=Item.Kind.GOLD,
            response=f"The sky is green ({i}).",
            gold_answers={"sensible": "no"},
            open_slots=0,
        )
    raters = {
        name: UserFactory(role=Role.CROWDWORKER, username=name)
        for name in ("careful-a", "careful-b", "careful-c", "careful-d", "noisy")
    }
    rate_everything(campaign, raters)
    admin = UserFactory(role=Role.ADMIN)
    log_in(page, live_server.url, admin.username, DEFAULT_PASSWORD)

    page.goto(f"{live_server.url}/admin/annotation/campaign/{campaign.pk}/change/")
    panel = page.locator("#rater-model")
    expect(page.locator("#completeness")).to_contain_text(f"Complete (labelled): {ITEMS}")
    expect(panel).to_contain_text("No Dawid–Skene run yet.")
    workers = page.locator("#workers")
    expect(workers).not_to_contain_text("accuracy (DS)")
    panel.get_by_role("button", name="Aggregate with Dawid–Skene").click()

    run = page.locator("#rater-model-run")
    # The page polls the run's progress (htmx) while the worker fits it...
    expect(run).to_contain_text(re.compile(r"Pending|Running"))
    expect(run.locator("progress")).to_have_count(1)
    # ...until it is done; then the page shows what came out.
    expect(run).to_contain_text("Done", timeout=30_000)
    expect(run).to_contain_text(f"{ITEMS * 3 * 3} judgments of {ITEMS} complete items")
    # Three careful raters or two outvote the noisy one on every item: both labels agree.
    expect(run).to_contain_text(
        "Agreement with the majority label: sensible 100%, specific 100%, interesting 100%."
    )
    expect(run).not_to_have_attribute("hx-trigger", re.compile("every"))

    # The poll that found the run finished reloaded the page: the estimates are in the Workers table.
    flagged = page.locator("#flagged-raters")
    expect(flagged).to_contain_text("Flagged for review", timeout=10_000)
    expect(flagged).to_contain_text("noisy (interesting, sensible, specific).")
    for name in raters:
        if name != "noisy":
            expect(flagged).not_to_contain_text(name)
    header = workers.locator("thead")
    expect(header).to_contain_text("gold accuracy")
    for attribute in ("interesting", "sensible", "specific"):
        expect(header).to_contain_text(f"{attribute} accuracy (DS)")
    # Gold accuracy, then one estimate per attribute, then "blocked": gold says everyone is
    # perfect; Dawid–Skene tells the noisy rater apart.
    rows = {
        name: workers.locator("tbody tr", has=page.get_by_role("cell", name=name, exact=True))
        for name in raters
    }
    for name, row in rows.items():
        cells = row.locator("td")
        expect(cells.nth(3)).to_have_text("100%")
        for column in (4, 5, 6):
            if name == "noisy":
                expect(cells.nth(column)).to_have_text(re.compile(r"^\d+% \(\d+\) flagged$"))
                expect(cells.nth(column)).to_have_class(re.compile("flagged"))
            else:
                expect(cells.nth(column)).to_have_text(re.compile(r"^\d+% \(\d+\)$"))
                expect(cells.nth(column)).not_to_have_class(re.compile("flagged"))
        expect(cells.nth(7)).to_have_text("")  # not blocked
    estimates = RaterEstimate.objects.filter(run__campaign=campaign)
    noisy = [e.accuracy for e in estimates if e.worker.username == "noisy"]
    careful = [e.accuracy for e in estimates if e.worker.username != "noisy"]
    assert max(noisy) < 0.5 < 0.9 < min(careful), (noisy, careful)
    shown = rows["noisy"].locator("td").nth(5).inner_text()  # sensible
    sensible = estimates.get(worker__username="noisy", attribute="sensible")
    assert shown.startswith(f"{round(sensible.accuracy * 100)}% ({sensible.answers})")

    # Flagged is for an admin to look at: the noisy rater is not blocked and gets new work.
    assert not WorkerQuality.objects.filter(campaign=campaign, blocked=True).exists()
    dialog_with_turns(["One more?", "Answer 100."], external_id="more", purpose="quality")
    campaigns.campaign_add_dialogs(campaign=campaign, dialogs=Dialog.objects.filter(external_id="more"))
    lease = assignments.assignment_lease_next(worker=raters["noisy"], campaign=campaign)
    assert lease is not None
    assert lease.item.response == "Answer 100."
