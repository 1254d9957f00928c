"""Stopping once the answer is decided (issue 17, part 1): a campaign option, off by default.

Through the real submit endpoint on PostgreSQL, as raters use it: the submission that decides an
item releases its remaining slots in the same statement, the item counts as complete at the raters
it had, and its labels (the full panel's) and counts (its own raters') reach consensus, the export
and the campaign page. The rules' side is proved in test_decided_rules.py; real per-rater data in
test_decided_replay.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from annotation import consensus_export, hot_path, selectors
from annotation.errors import AnnotationError
from annotation.models import Campaign, ConsensusLabel, Item
from annotation.services import assignments, campaigns, consensus
from groundwork.roles import Role
from tests.annotation.helpers import YES3, labels, ssi_campaign
from tests.factories import UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db

NEXT = "/api/v1/tasks/next"
NO = {"sensible": "no"}
SAFE = {"harm": "no", "bias": "no"}


def rater() -> APIClient:
    client = APIClient()
    client.force_authenticate(UserFactory(role=Role.CROWDWORKER))
    return client


def lease(client: APIClient, campaign: Campaign) -> dict[str, Any] | None:
    response = client.get(NEXT, {"campaign": campaign.pk})
    assert response.status_code in (200, 204), response.content
    return response.json() if response.status_code == 200 else None


def submit(client: APIClient, task: dict[str, Any], answers: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/assignments/{task['assignment_id']}/submit", {"answers": answers}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def rate(campaign: Campaign, *answers: dict[str, str]) -> list[APIClient]:
    """One new rater per answer, each leasing the campaign's next item and submitting."""
    clients = []
    for given in answers:
        client = rater()
        task = lease(client, campaign)
        assert task is not None, "nothing left to rate"
        submit(client, task, given)
        clients.append(client)
    return clients


def item_of(campaign: Campaign) -> Item:
    return Item.objects.get(campaign=campaign)


def decided_ssi(**kwargs: Any) -> Campaign:
    return ssi_campaign(items=1, raters=5, name="decided", stop_when_decided=True, **kwargs)


def test_three_yes_of_five_release_the_remaining_slots_and_label_the_item_with_its_three_raters() -> None:
    campaign = decided_ssi()

    rate(campaign, YES3, YES3)
    assert (item_of(campaign).open_slots, item_of(campaign).decided_at_raters) == (3, None)
    rate(campaign, YES3)

    item = item_of(campaign)
    assert (item.open_slots, item.decided_at_raters, item.judgment_count) == (0, 3, 3)
    assert lease(rater(), campaign) is None  # no fourth rater is asked
    consensus.campaign_aggregate(campaign=campaign)
    assert labels(item.key) == dict.fromkeys(["sensible", "specific", "interesting"], (1, 3, 0, 0))
    assert set(ConsensusLabel.objects.filter(item=item).values_list("yes_fraction", flat=True)) == {1.0}
    progress = selectors.campaign_progress(campaign=campaign)
    assert (progress["complete"], progress["decided"], progress["saved"], progress["planned"]) == (1, 1, 2, 5)
    (line,) = consensus_export.consensus_lines(campaign=campaign, format="jsonl")
    assert json.loads(line)["raters"] == 3
    assert list(selectors.labelled_items(campaigns=[campaign])) == [item]  # what datasets read


def test_three_no_to_sensible_decide_every_attribute_through_the_cascade() -> None:
    campaign = decided_ssi()

    rate(campaign, NO, {"sensible": "maybe"}, NO)

    assert item_of(campaign).decided_at_raters == 3
    consensus.campaign_aggregate(campaign=campaign)
    assert labels(item_of(campaign).key)["sensible"] == (0, 0, 2, 1)
    assert labels(item_of(campaign).key)["interesting"] == (0, 0, 3, 0)


def test_with_the_option_off_every_rater_is_asked() -> None:
    campaign = ssi_campaign(items=1, raters=5, name="paper")

    rate(campaign, YES3, YES3, YES3)

    item = item_of(campaign)
    assert (item.open_slots, item.decided_at_raters) == (2, None)
    assert lease(rater(), campaign) is not None
    consensus.campaign_aggregate(campaign=campaign)
    assert not ConsensusLabel.objects.exists()  # incomplete: two raters still to answer


def test_an_item_whose_interesting_label_could_still_change_is_not_stopped() -> None:
    campaign = decided_ssi()
    # Sensible and specific are decided (3 yes); interesting has 2 yes of 3 so far: not decided.
    rate(campaign, YES3, YES3, {**YES3, "interesting": "no"})

    assert (item_of(campaign).open_slots, item_of(campaign).decided_at_raters) == (2, None)
    rate(campaign, YES3)  # the fourth: interesting has 3 yes now
    assert (item_of(campaign).open_slots, item_of(campaign).decided_at_raters) == (0, 4)


def safety_campaign(**kwargs: Any) -> Campaign:
    dialog_with_turns(["Say something rude.", "I would rather not."], external_id="s0", purpose="safety")
    return campaigns.campaign_create(
        name="safety",
        kind="safety",
        filters=campaigns.DialogFilters(purpose="safety"),
        objectives=["harm", "bias"],
        **kwargs,
    )


def test_a_safety_item_two_raters_of_three_find_safe_on_every_objective_is_safe_at_once() -> None:
    campaign = safety_campaign(stop_when_decided=True)

    rate(campaign, SAFE, SAFE)

    item = item_of(campaign)
    assert (item.open_slots, item.decided_at_raters) == (0, 2)
    assert lease(rater(), campaign) is None
    consensus.campaign_aggregate(campaign=campaign)
    found = labels(item.key)
    assert found["safety"] == (1, 2, 0, 0)  # the two raters who said no to every objective
    assert found["unsafe"] == (0, 0, 2, 0)
    assert found["harm"] == found["bias"] == (0, 0, 2, 0)


def test_a_safety_item_one_rater_doubts_waits_for_the_third() -> None:
    campaign = safety_campaign(stop_when_decided=True)

    rate(campaign, SAFE, {"harm": "maybe", "bias": "no"})

    assert item_of(campaign).decided_at_raters is None
    assert lease(rater(), campaign) is not None


def test_a_rater_who_held_a_lease_when_the_item_was_decided_may_still_answer() -> None:
    campaign = decided_ssi()
    holders = [rater() for _ in range(5)]
    tasks = [lease(client, campaign) for client in holders]  # every slot leased
    for client, task in zip(holders[:3], tasks[:3], strict=True):
        submit(client, task, YES3)
    assert (item_of(campaign).open_slots, item_of(campaign).decided_at_raters) == (0, 3)

    submit(holders[3], tasks[3], NO)  # late, and against: the labels stay the full panel's
    assignments.assignments_expire(now=timezone.now() + timedelta(days=1))  # the fifth lease runs out

    item = item_of(campaign)
    assert (item.open_slots, item.judgment_count, item.decided_at_raters) == (0, 4, 3)  # not reopened
    consensus.campaign_aggregate(campaign=campaign)
    assert labels(item.key)["sensible"] == (1, 3, 1, 0)
    assert selectors.campaign_progress(campaign=campaign)["saved"] == 1


def test_the_deciding_submission_costs_no_extra_query() -> None:
    """The decision rides on the submission's own read and write: the same statements as without
    the option (the next lease included)."""

    def third_submission(campaign: Campaign) -> int:
        rate(campaign, YES3, YES3)
        client = rater()
        task = lease(client, campaign)
        with CaptureQueriesContext(connection) as queries:
            submit(client, task, YES3)
        return len(queries)

    plain = third_submission(ssi_campaign(items=2, raters=5, name="plain"))
    deciding = third_submission(ssi_campaign(items=2, raters=5, name="stops", stop_when_decided=True))

    assert Item.objects.filter(campaign__name="stops", decided_at_raters=3).count() == 1
    assert deciding == plain


def test_gold_items_always_get_every_rater() -> None:
    campaign = decided_ssi()
    gold = Item.objects.create(
        campaign=campaign, key="gold", kind=Item.Kind.GOLD, response="Hi.", gold_answers=YES3, open_slots=0
    )
    for _ in range(3):
        worker = UserFactory(role=Role.CROWDWORKER)
        now = timezone.now()
        leased = hot_path.lease_item(
            item=gold, worker_id=worker.pk, now=now, expires_at=now + timedelta(hours=1)
        )
        assert hot_path.find_assignment(leased.pk, now=now, lock=False).judged is None
        assignments.judgment_submit(assignment_id=leased.pk, worker=worker, answers=YES3)

    gold.refresh_from_db()
    assert (gold.decided_at_raters, gold.judgment_count) == (None, 0)


def test_kinds_that_ask_every_rater_refuse_the_option() -> None:
    # The kinds that may, by the names the campaign pages give them (one holds commas: quoted).
    decidable = (
        "is for “Sensibleness, specificity, interestingness”, “Safety”, “Groundedness: evaluation”, "
        "“Helpfulness and role consistency” or “Side by side: the better of two responses” campaigns"
    )
    with pytest.raises(AnnotationError, match=f"ask every rater: .*{decidable}"):
        campaigns.campaign_create(name="r", kind="groundedness_rewrite", empty=True, stop_when_decided=True)


def test_the_admin_creates_a_campaign_that_stops_when_decided_and_shows_what_it_saved(client, users) -> None:
    dialog_with_turns(["Hi", "Hello"], external_id="q1", purpose="quality")
    client.force_login(users[Role.ADMIN])
    add = reverse("admin:annotation_campaign_add")

    assert 'name="stop_when_decided"' in client.get(add).content.decode()
    response = client.post(
        add,
        {
            "name": "Stops",
            "kind": "ssi",
            "purpose": "quality",
            "raters_per_item": "5",
            "stop_when_decided": "on",
        },
    )

    assert response.status_code == 302
    campaign = Campaign.objects.get(name="Stops")
    assert campaign.stop_when_decided
    rate(campaign, YES3, YES3, YES3)
    page = client.get(reverse("admin:annotation_campaign_change", args=[campaign.pk])).content.decode()
    assert "Stopped once decided: <strong>1</strong> items" in page
    assert "<strong>2</strong> judgments saved" in page
    assert "40.0 % of the 5 judgments" in page


def test_the_admin_refuses_the_option_for_a_rewrite_campaign(client, users) -> None:
    client.force_login(users[Role.ADMIN])

    response = client.post(
        reverse("admin:annotation_campaign_add"),
        {"name": "Rewrites", "kind": "groundedness_rewrite", "stop_when_decided": "on", "empty": "on"},
    )

    assert response.status_code == 200
    assert "ask every rater" in response.content.decode()
    assert not Campaign.objects.filter(name="Rewrites").exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_deciding_submission_gets_the_items_consensus_from_the_worker(celery_worker) -> None:
    from tests.annotation.test_worker import eventually

    campaign = decided_ssi()
    rate(campaign, YES3, YES3, YES3)

    eventually(lambda: ConsensusLabel.objects.filter(item__campaign=campaign).count() == 3)
    assert labels(item_of(campaign).key)["interesting"] == (1, 3, 0, 0)
