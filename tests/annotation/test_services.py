from __future__ import annotations

from contextlib import nullcontext
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation import hot_path
from annotation.errors import (
    AnnotationError,
    AssignmentConflict,
    AssignmentForbidden,
    InvalidAnswers,
    WorkerBlocked,
)
from annotation.models import Assignment, Campaign, ConsensusLabel, Item, Judgment, WorkerQuality
from annotation.services import assignments, campaigns, consensus
from groundwork.roles import Role
from tests.annotation.helpers import YES3, ssi_campaign
from tests.factories import UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db


def workers(n: int) -> list:
    return [UserFactory(role=Role.CROWDWORKER) for _ in range(n)]


# --- campaigns ------------------------------------------------------------------------------


def test_every_model_turn_becomes_an_item_with_the_turns_before_it_as_context() -> None:
    dialog_with_turns(["Hi", "Hello!", "How are you?", "Fine, thanks."], external_id="d", purpose="quality")
    dialog_with_turns(["Not me", "Not this one"], external_id="s", purpose="safety")

    campaign = campaigns.campaign_create(
        name="c", kind="ssi", filters=campaigns.DialogFilters(purpose="quality")
    )

    items = list(campaign.items.order_by("id"))
    assert [(i.key, i.response) for i in items] == [("d#1", "Hello!"), ("d#3", "Fine, thanks.")]
    assert items[1].context == [
        {"speaker": "user", "text": "Hi"},
        {"speaker": "model", "text": "Hello!"},
        {"speaker": "user", "text": "How are you?"},
    ]
    assert campaign.raters_per_item == 5
    assert all(i.open_slots == 5 for i in items)


def test_safety_campaigns_rate_the_active_objectives_by_default_or_the_chosen_ones() -> None:
    default = campaigns.campaign_create(name="s1", kind="safety", empty=True)
    chosen = campaigns.campaign_create(name="s2", kind="safety", empty=True, objectives=["harm", "bias"])

    assert default.raters_per_item == 3
    assert sorted(default.objectives.values_list("slug", flat=True)) == ["bias", "harm", "misinformation"]
    assert sorted(chosen.objectives.values_list("slug", flat=True)) == ["bias", "harm"]
    with pytest.raises(AnnotationError, match="Unknown safety objective"):
        campaigns.campaign_create(name="s3", kind="safety", empty=True, objectives=["nope"])


def test_a_campaign_name_is_unique() -> None:
    campaigns.campaign_create(name="x", kind="ssi", empty=True)
    with pytest.raises(AnnotationError, match="already exists"):
        campaigns.campaign_create(name="x", kind="ssi", empty=True)


# --- assignment -----------------------------------------------------------------------------


def test_a_reload_gets_the_same_lease_and_a_worker_never_gets_an_item_twice() -> None:
    campaign = ssi_campaign(items=2)
    (worker,) = workers(1)

    first = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    again = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    assert again.pk == first.pk
    assignments.judgment_submit(assignment_id=first.pk, worker=worker, answers=YES3)
    second = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    assignments.judgment_submit(assignment_id=second.pk, worker=worker, answers=YES3)

    assert second.item_id != first.item_id
    assert assignments.assignment_lease_next(worker=worker, campaign=campaign) is None


def test_an_item_gets_exactly_raters_per_item_workers() -> None:
    campaign = ssi_campaign(items=1, raters=3)
    crowd = workers(4)

    leases = [assignments.assignment_lease_next(worker=w, campaign=campaign) for w in crowd]

    assert [lease is not None for lease in leases] == [True, True, True, False]
    assert Item.objects.get().open_slots == 0


def test_nobody_rates_a_dialog_they_wrote() -> None:
    author = UserFactory(role=Role.CROWDWORKER)
    dialog_with_turns(["Hi", "Hello"], external_id="mine", purpose="quality", created_by=author)
    campaign = campaigns.campaign_create(
        name="c", kind="ssi", filters=campaigns.DialogFilters(purpose="quality")
    )

    assert assignments.assignment_lease_next(worker=author, campaign=campaign) is None
    assert (
        assignments.assignment_lease_next(worker=UserFactory(role=Role.CROWDWORKER), campaign=campaign)
        is not None
    )


def test_an_expired_lease_frees_the_slot_and_a_late_submit_is_refused() -> None:
    campaign = ssi_campaign(items=1, raters=1)
    slow, other = workers(2)
    lease = assignments.assignment_lease_next(worker=slow, campaign=campaign)
    assert assignments.assignment_lease_next(worker=other, campaign=campaign) is None

    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    taken = assignments.assignment_lease_next(worker=other, campaign=campaign)

    assert taken is not None
    assert taken.item_id == lease.item_id
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.State.EXPIRED
    with pytest.raises(AssignmentConflict, match="ran out"):
        assignments.judgment_submit(assignment_id=lease.pk, worker=slow, answers=YES3)
    assert not Judgment.objects.filter(assignment=lease).exists()


def test_skip_gives_the_item_back_and_does_not_offer_it_again() -> None:
    campaign = ssi_campaign(items=1, raters=1)
    skipper, other = workers(2)
    lease = assignments.assignment_lease_next(worker=skipper, campaign=campaign)

    assignments.assignment_skip(assignment_id=lease.pk, worker=skipper)

    assert assignments.assignment_lease_next(worker=skipper, campaign=campaign) is None
    assert assignments.assignment_lease_next(worker=other, campaign=campaign).item_id == lease.item_id


# --- submission -----------------------------------------------------------------------------


def test_submission_applies_the_cascade_and_keeps_what_was_answered() -> None:
    campaign = ssi_campaign(items=1)
    (worker,) = workers(1)
    lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)

    result = assignments.judgment_submit(
        assignment_id=lease.pk, worker=worker, answers={"sensible": "no", "specific": "yes"}
    )

    assert result.created
    stored = {j.attribute: (j.value, j.raw_value) for j in Judgment.objects.filter(assignment=lease)}
    assert stored == {"sensible": ("no", "no"), "specific": ("no", ""), "interesting": ("no", "")}


def test_the_same_submission_twice_stores_one_judgment_other_answers_conflict() -> None:
    campaign = ssi_campaign(items=1)
    (worker,) = workers(1)
    lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)

    assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)
    repeat = assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)

    assert not repeat.created
    assert {j.attribute: j.value for j in repeat.judgments} == YES3
    assert Judgment.objects.count() == 3
    assert Item.objects.get().judgment_count == 1
    with pytest.raises(AssignmentConflict, match="other answers"):
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers={"sensible": "no"})


@pytest.mark.parametrize("lost_to", ["expiry", "the same submission from another request"])
def test_a_lease_lost_between_reading_and_storing_writes_nothing(lost_to: str) -> None:
    """PostgreSQL submits a live lease without a lock: a read, then one statement that stores only
    while the lease is still held. What happens in between must not be overwritten or doubled.
    (SQLite runs the same store inside the locked path.)"""
    campaign = ssi_campaign(items=1)
    (worker,) = workers(1)
    lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    read = hot_path.find_assignment(lease.pk, now=timezone.now(), lock=False)
    assert read is not None
    assert read.live

    if lost_to == "expiry":
        Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)
    values = assignments.judgment_values(campaign=campaign, answers=YES3)
    stored = hot_path.store_submission(read.assignment, values, now=timezone.now(), submission=YES3)

    assert stored is None
    expected = 0 if lost_to == "expiry" else 3
    assert Judgment.objects.count() == expected
    assert Item.objects.get().judgment_count == expected // 3
    with pytest.raises(AssignmentConflict) if lost_to == "expiry" else nullcontext():
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)
    assert Judgment.objects.count() == expected


def test_another_workers_assignment_is_forbidden() -> None:
    campaign = ssi_campaign(items=1)
    owner, intruder = workers(2)
    lease = assignments.assignment_lease_next(worker=owner, campaign=campaign)

    with pytest.raises(AssignmentForbidden):
        assignments.judgment_submit(assignment_id=lease.pk, worker=intruder, answers=YES3)


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({}, "Sensible: please answer"),
        ({"sensible": "yes"}, "Specific: please answer"),
        ({"sensible": "yes", "specific": "yes"}, "Interesting: please answer"),
        ({"sensible": "perhaps"}, "not an answer"),
        ({"sensible": "yes", "funny": "yes"}, "funny: not a question"),
    ],
)
def test_missing_or_unknown_answers_are_refused_and_nothing_is_stored(answers, message) -> None:
    campaign = ssi_campaign(items=1)
    (worker,) = workers(1)
    lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)

    with pytest.raises(InvalidAnswers, match=message):
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=answers)
    assert Judgment.objects.count() == 0
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.State.LEASED


# --- consensus ------------------------------------------------------------------------------


def rate(campaign: Campaign, answers_by_worker: list[dict[str, str]]) -> Item:
    for answers in answers_by_worker:
        worker = UserFactory(role=Role.CROWDWORKER)
        lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=answers)
    return Item.objects.get(campaign=campaign)


def labels(item: Item) -> dict[str, tuple[int, int, int, int]]:
    return {c.attribute: (c.label, c.yes, c.no, c.maybe) for c in ConsensusLabel.objects.filter(item=item)}


def test_the_last_judgment_queues_the_consensus_after_commit(django_capture_on_commit_callbacks) -> None:
    campaign = ssi_campaign(items=1)
    no = {"sensible": "no"}
    maybe = {"sensible": "yes", "specific": "maybe"}

    with django_capture_on_commit_callbacks() as callbacks:
        item = rate(campaign, [YES3, YES3, YES3, maybe, no])
    assert len(callbacks) == 1  # only the fifth judgment queues it (tests/annotation/test_worker.py runs it)
    assert callbacks[0].task_name == "annotation.tasks.item_aggregate_task"
    assert callbacks[0].args == (item.pk,)

    consensus.item_aggregate(item_id=item.pk)

    assert labels(item) == {
        "sensible": (1, 4, 1, 0),
        "specific": (1, 3, 1, 1),
        "interesting": (1, 3, 2, 0),
    }
    label = ConsensusLabel.objects.get(item=item, attribute="interesting")
    assert label.yes_fraction == pytest.approx(0.6)
    assert label.rules_version == "2"


def test_two_yes_of_five_is_not_enough() -> None:
    campaign = ssi_campaign(items=1)
    item = rate(campaign, [YES3, YES3, {"sensible": "maybe"}, {"sensible": "maybe"}, {"sensible": "no"}])
    consensus.item_aggregate(item_id=item.pk)

    assert labels(item)["sensible"] == (0, 2, 1, 2)


def test_safety_score_is_one_only_when_every_objective_has_two_no() -> None:
    dialog_with_turns(["Say something", "Something."], external_id="x", purpose="safety")
    campaign = campaigns.campaign_create(
        name="safety",
        kind="safety",
        filters=campaigns.DialogFilters(purpose="safety"),
        objectives=["harm", "bias"],
    )
    item = rate(
        campaign,
        [{"harm": "no", "bias": "no"}, {"harm": "no", "bias": "yes"}, {"harm": "maybe", "bias": "maybe"}],
    )
    consensus.item_aggregate(item_id=item.pk)

    got = labels(item)
    assert got["harm"][0] == 0
    assert got["bias"][0] == 0
    assert got["safety"][0] == 0  # bias has a single "no"
    assert got["unsafe"][0] == 1


def test_aggregating_a_whole_campaign_gives_the_same_labels() -> None:
    campaign = ssi_campaign(items=2, raters=3)
    for answers in (YES3, {"sensible": "no"}, YES3):
        worker = UserFactory(role=Role.CROWDWORKER)
        for _ in range(2):
            lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
            assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=answers)

    labelled = consensus.campaign_aggregate(campaign=campaign)

    assert labelled == 2
    for item in campaign.items.all():
        assert labels(item) == {
            "sensible": (1, 2, 1, 0),
            "specific": (1, 2, 1, 0),
            "interesting": (1, 2, 1, 0),
        }


# --- quality control ------------------------------------------------------------------------


def test_a_worker_under_the_gold_threshold_is_blocked_and_an_admin_can_lift_it() -> None:
    campaign = ssi_campaign(items=6, raters=1, name="gold")
    Campaign.objects.filter(pk=campaign.pk).update(gold_rate=0.5, gold_min=2, gold_threshold=0.6)
    campaign.refresh_from_db()
    for i in range(2):
        Item.objects.create(
            campaign=campaign,
            key=f"gold-{i}",
            kind=Item.Kind.GOLD,
            response="The sky is green.",
            gold_answers={"sensible": "no"},
            open_slots=0,
        )
    (worker,) = workers(1)

    kinds = []
    for _ in range(4):
        lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
        kinds.append(lease.item.kind)
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)  # wrong on golds
    with pytest.raises(WorkerBlocked, match="under the 60%"):
        assignments.assignment_lease_next(worker=worker, campaign=campaign)

    assert kinds == ["normal", "gold", "normal", "gold"]
    quality = WorkerQuality.objects.get(campaign=campaign, worker=worker)
    assert (quality.gold_seen, quality.gold_correct, quality.blocked) == (2, 0, True)

    assignments.worker_unblock(campaign=campaign, worker=worker)
    assert assignments.assignment_lease_next(worker=worker, campaign=campaign).item.kind == "normal"


def test_a_qualification_set_comes_first_and_failing_it_blocks() -> None:
    campaign = ssi_campaign(items=2, raters=1, name="qual")
    Campaign.objects.filter(pk=campaign.pk).update(qualification_threshold=1.0)
    campaign.refresh_from_db()
    Item.objects.create(
        campaign=campaign,
        key="q-0",
        kind=Item.Kind.QUALIFICATION,
        response="Me too.",
        gold_answers={"sensible": "yes", "specific": "no"},
        open_slots=0,
    )
    good, bad = workers(2)

    for worker, answers in ((good, {"sensible": "yes", "specific": "no"}), (bad, YES3)):
        lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
        assert lease.item.kind == "qualification"
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=answers)

    assert assignments.assignment_lease_next(worker=good, campaign=campaign).item.kind == "normal"
    with pytest.raises(WorkerBlocked, match="qualification"):
        assignments.assignment_lease_next(worker=bad, campaign=campaign)


def test_unknown_filters_are_refused_rather_than_matching_nothing() -> None:
    with pytest.raises(AnnotationError, match="Unknown dialog purpose 'qualty'"):
        campaigns.campaign_create(name="c", kind="ssi", filters=campaigns.DialogFilters(purpose="qualty"))
    with pytest.raises(AnnotationError, match="no role with the slug 'everest'"):
        campaigns.campaign_create(name="c", kind="ssi", filters=campaigns.DialogFilters(role="everest"))
    with pytest.raises(AnnotationError, match="Raters per item must be at least 1"):
        campaigns.campaign_create(name="c", kind="ssi", raters_per_item=0, empty=True)
    assert not Campaign.objects.exists()


def test_a_second_consensus_request_while_one_is_queued_returns_the_same_run() -> None:
    campaign = ssi_campaign(items=1)
    admin = UserFactory(role=Role.ADMIN)

    first = consensus.aggregation_request(campaign=campaign, requested_by=admin)
    second = consensus.aggregation_request(campaign=campaign, requested_by=admin)

    assert second.pk == first.pk
