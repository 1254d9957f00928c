"""Handing out items and taking in ratings: the services around the rating hot path.

A worker leases an item's slot (``assignment_lease_next``; ``assignment_lease_any`` across the
open campaigns of a kind), submits their answers (``judgment_submit``) or gives the item back
(``assignment_skip``); leases that ran out free their slots (``assignments_expire``). Gold and
qualification items keep each worker's record (``WorkerQuality``), and a block an admin lifts
(``worker_unblock``). The statements they run are hand-written SQL in ``annotation.hot_path``;
the rules (who may submit what, the cascade, gold) are here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from annotation import hot_path, rules
from annotation.errors import (
    AssignmentConflict,
    AssignmentForbidden,
    AssignmentNotFound,
    InvalidAnswers,
    WorkerBlocked,
)
from annotation.models import Assignment, Campaign, Item, Judgment, WorkerQuality
from annotation.questions import campaign_questions, question_gates
from annotation.services import consensus
from groundwork import queueing

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def lease_duration() -> timedelta:
    return timedelta(minutes=settings.ANNOTATION_LEASE_MINUTES)


def assignment_lease_next(
    *, worker: User, campaign: Campaign, now: datetime | None = None
) -> Assignment | None:
    """Lease the worker's next item of ``campaign``, or None when nothing is left for them.

    A worker's live lease is returned again (a reload shows the same item). Otherwise the next
    item is one with a free slot that the worker has not seen and did not write, taken with
    ``SELECT … FOR UPDATE SKIP LOCKED`` through a partial index over items with free slots, so
    concurrent workers never wait for each other and the cost does not grow with the campaign.
    Raises ``WorkerBlocked`` when the worker is blocked from the campaign.

    A transaction of its own, never the submission's: the submission locks its item, and a
    lease that waits for held items while holding another could deadlock with a second one.
    """
    now = now or timezone.now()
    screened = campaign.qualification_threshold is not None or campaign.gold_rate > 0
    if campaign.status == Campaign.Status.OPEN and not screened:
        # The common case in one statement (PostgreSQL): it also checks that the worker holds
        # no live lease here and is not blocked; when it finds nothing, the rest says why.
        leased = _lease_open_item(campaign=campaign, worker=worker, now=now, wait=False)
        if leased is not None:
            return leased
    with transaction.atomic():
        return _assign_from_standing(worker=worker, campaign=campaign, now=now)


def _assign_from_standing(*, worker: User, campaign: Campaign, now: datetime) -> Assignment | None:
    """``assignment_lease_next`` from the worker's standing: their live lease, a block, qualification and
    gold items first, then the next open item."""
    here = hot_path.standing(worker_id=worker.pk, campaign_id=campaign.pk, now=now)
    if here.live_assignment_id is not None:
        return Assignment.objects.select_related("item__campaign").get(pk=here.live_assignment_id)
    if campaign.status != Campaign.Status.OPEN:
        return None
    if here.blocked:
        raise WorkerBlocked(here.blocked_reason or "You are blocked from this campaign.")
    if campaign.qualification_threshold is not None and not here.qualified:
        item = _next_special(campaign=campaign, worker=worker, kind=Item.Kind.QUALIFICATION)
        return _lease(item=item, campaign=campaign, worker=worker, now=now) if item else None
    if campaign.gold_rate > 0 and _gold_due(campaign=campaign, worker=worker):
        item = _next_special(campaign=campaign, worker=worker, kind=Item.Kind.GOLD)
        if item is not None:
            return _lease(item=item, campaign=campaign, worker=worker, now=now)

    leased = _lease_open_item(campaign=campaign, worker=worker, now=now)
    # Slots of expired leases are freed when the campaign seems full, not on every call.
    if leased is None and assignments_expire(campaign=campaign, now=now):
        leased = _lease_open_item(campaign=campaign, worker=worker, now=now)
    return leased


def _lease_open_item(
    *, campaign: Campaign, worker: User, now: datetime, wait: bool = True
) -> Assignment | None:
    return hot_path.lease_open_item(
        campaign=campaign, worker_id=worker.pk, now=now, expires_at=now + lease_duration(), wait=wait
    )


def _seen_by(worker: User) -> QuerySet[Assignment]:
    return Assignment.objects.filter(worker=worker).values("item_id")


def _lease(*, item: Item, campaign: Campaign, worker: User, now: datetime) -> Assignment:
    item.campaign = campaign  # the caller has it: spares a query when the task is shown
    return hot_path.lease_item(item=item, worker_id=worker.pk, now=now, expires_at=now + lease_duration())


def _next_special(*, campaign: Campaign, worker: User, kind: str) -> Item | None:
    """The next gold or qualification item the worker has not seen (every worker sees each)."""
    return (
        Item.objects.filter(campaign=campaign, kind=kind)
        .exclude(pk__in=_seen_by(worker))
        .order_by("id")
        .first()
    )


def _gold_due(*, campaign: Campaign, worker: User) -> bool:
    """Golds come at ``gold_rate`` of a worker's items, spread evenly (deterministic)."""
    counts = Assignment.objects.filter(worker=worker, item__campaign=campaign).aggregate(
        total=Count("id"), gold=Count("id", filter=Q(item__kind=Item.Kind.GOLD))
    )
    return counts["gold"] < math.floor((counts["total"] + 1) * campaign.gold_rate)


def assignments_expire(
    *, campaign: Campaign | None = None, now: datetime | None = None, limit: int = 500
) -> int:
    """Free the slots of leases that ran out. Returns how many leases expired."""
    now = now or timezone.now()
    with transaction.atomic():
        leases = Assignment.objects.select_for_update(skip_locked=True).filter(
            state=Assignment.State.LEASED, expires_at__lte=now
        )
        if campaign is not None:
            leases = leases.filter(item__campaign=campaign)
        expired = list(leases.order_by("expires_at").values_list("id", "item_id")[:limit])
        if not expired:
            return 0
        Assignment.objects.filter(pk__in=[pk for pk, _ in expired]).update(state=Assignment.State.EXPIRED)
        _give_back_slots(item_id for _, item_id in expired)
    return len(expired)


def _give_back_slots(item_ids: Iterable[int]) -> None:
    freed: dict[int, int] = defaultdict(int)
    for item_id in item_ids:
        freed[item_id] += 1
    # In id order, so two transactions freeing slots never wait on each other in a cycle.
    for item_id in sorted(freed):
        # A decided item's released slots stay released.
        Item.objects.filter(pk=item_id, kind=Item.Kind.NORMAL, decided_at_raters__isnull=True).update(
            open_slots=F("open_slots") + freed[item_id]
        )


def assignment_lease_any(
    *, worker: User, kind: str | None = None, campaign_id: int | None = None
) -> Assignment | None:
    """The worker's next assignment in the open campaigns of ``kind`` (or one campaign).

    Raises ``WorkerBlocked`` when nothing is left but campaigns the worker is blocked from.
    """
    campaigns = Campaign.objects.filter(status=Campaign.Status.OPEN).order_by("created_at", "id")
    if kind:
        campaigns = campaigns.filter(kind=kind)
    if campaign_id is not None:
        campaigns = campaigns.filter(pk=campaign_id)
    blocked: WorkerBlocked | None = None
    for campaign in campaigns:
        try:
            assignment = assignment_lease_next(worker=worker, campaign=campaign)
        except WorkerBlocked as exc:
            blocked = blocked or exc
            continue
        if assignment is not None:
            return assignment
    if blocked is not None:
        raise blocked  # nothing else to do: say why, rather than "nothing left"
    return None


@transaction.atomic
def assignment_skip(*, assignment_id: int, worker: User) -> Assignment:
    """Give the item back; it is not offered to this worker again."""
    assignment = locked_assignment(assignment_id, worker).assignment
    if assignment.state != Assignment.State.LEASED:
        raise AssignmentConflict(f"This assignment is {assignment.state}; only a leased item can be skipped.")
    assignment.state = Assignment.State.SKIPPED
    assignment.save(update_fields=["state"])
    _give_back_slots([assignment.item_id])
    return assignment


def locked_assignment(assignment_id: int, worker: User) -> hot_path.Found:
    """The worker's assignment, its row locked, with its item and campaign."""
    return owned_assignment(hot_path.find_assignment(assignment_id, now=timezone.now(), lock=True), worker)


def owned_assignment(found: hot_path.Found | None, worker: User) -> hot_path.Found:
    if found is None:
        raise AssignmentNotFound("There is no such assignment.")
    if found.assignment.worker_id != worker.pk:
        raise AssignmentForbidden("This assignment belongs to another worker.")
    return found


# --- submission -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    assignment: Assignment
    judgments: list[Judgment]
    created: bool  # False: the same submission was already stored


def judgment_submit(*, assignment_id: int, worker: User, answers: Mapping[str, Any]) -> Submission:
    """Store the worker's answers for their assignment, all or nothing.

    The same submission again returns the stored one (``created`` False); other answers on a
    submitted assignment, an expired or skipped lease, or another worker's assignment are
    refused with a message. The item's last judgment triggers its consensus after commit.

    On PostgreSQL a live lease on a normal item is submitted without a transaction: a read, then
    one statement that stores everything only if the lease is still held (``hot_path.store_submission``).
    Everything else (a repeat, a lease that ran out meanwhile, gold, SQLite) takes the locked path.
    """
    if hot_path.stores_atomically():
        found = owned_assignment(
            hot_path.find_assignment(assignment_id, now=timezone.now(), lock=False), worker
        )
        stored = _submit_if_leased(found, answers=answers)
        if stored is not None:
            return stored
    with transaction.atomic():
        locked = locked_assignment(assignment_id, worker)
        assignment = locked.assignment
        submitted = _normalise(answers)
        if assignment.state == Assignment.State.SUBMITTED:
            if assignment.submission == submitted:
                return Submission(assignment, list(assignment.judgments.order_by("id")), created=False)
            raise AssignmentConflict("This assignment was already submitted with other answers.")
        check_lease_held(locked)
        values = judgment_values(campaign=assignment.item.campaign, answers=submitted)
        judgments = submission_complete(
            assignment=assignment, worker=worker, values=values, submission=submitted, judged=locked.judged
        )
    return Submission(assignment, judgments, created=True)


def _submit_if_leased(found: hot_path.Found, *, answers: Mapping[str, Any]) -> Submission | None:
    """``judgment_submit``'s path without a lock, for a live lease on a normal item; None when it
    does not apply or the lease was lost meanwhile (nothing written: the locked path decides)."""
    assignment = found.assignment
    item = assignment.item
    if not (found.live and assignment.state == Assignment.State.LEASED and item.kind == Item.Kind.NORMAL):
        return None
    submitted = _normalise(answers)
    values = judgment_values(campaign=item.campaign, answers=submitted)
    stored = hot_path.store_submission(
        assignment,
        values,
        now=timezone.now(),
        submission=submitted,
        decides=_decides(item, found.judged, values),
    )
    if stored is None:
        return None
    judgments, count, decided_at = stored
    _counted(item, count, decided_at)
    return Submission(assignment, judgments, created=True)


LEASE_LOST = (
    "The lease on this item ran out and the item went back to the pool; "
    "your answers were not stored. Ask for the next item."
)


def check_lease_held(locked: hot_path.Found) -> None:
    """Refuse a submission on a lease that is not held any more (expired or skipped)."""
    if locked.assignment.state != Assignment.State.LEASED or not locked.live:
        raise AssignmentConflict(LEASE_LOST)


def submission_complete(
    *,
    assignment: Assignment,
    worker: User,
    values: Mapping[str, tuple[str, str | None]],
    submission: dict[str, Any],
    judged: list[tuple[str, str]] | None = None,
) -> list[Judgment]:
    """Store the judgments and mark the assignment submitted; the item's last judgment triggers
    its consensus after commit, a gold or qualification item updates the worker's record.
    ``judged``: the item's judgments before this one (``hot_path.Found.judged``), read when its
    campaign stops once the answer is decided: a submission that decides the item releases its
    remaining slots."""
    item = assignment.item
    stored = hot_path.store_submission(
        assignment,
        values,
        now=timezone.now(),
        submission=submission,
        decides=_decides(item, judged, values),
    )
    if stored is None:  # the lease ran out since it was locked and checked
        raise AssignmentConflict(LEASE_LOST)
    judgments, count, decided_at = stored
    if count is None:  # a gold or qualification item: no count, the worker's record instead
        _record_gold(item=item, worker=worker, values=values)
    else:
        _counted(item, count, decided_at)
    return judgments


def _decides(
    item: Item, judged: list[tuple[str, str]] | None, values: Mapping[str, tuple[str, str | None]]
) -> bool:
    """Whether this submission (``values``) decides the item, after the judgments it had
    (``judged``; None: its campaign asks every rater, or it is a gold or qualification item).

    ``judged`` was read before this submission is stored, so a submission made meanwhile by another
    rater may be missing from it. That never makes a wrong decision: labels decided by some of an
    item's judgments stay decided whatever the others are (``annotation.decided``).
    It can only miss one, and the item then gets its next rater. The last rater decides nothing:
    the item is complete anyway."""
    if judged is None or item.judgment_count + 1 >= item.campaign.raters_per_item:
        return False
    counts: dict[str, rules.Counts] = {}
    for attribute, value in [*judged, *((attribute, value) for attribute, (value, _) in values.items())]:
        counts[attribute] = counts.get(attribute, rules.Counts()).add(value)
    return consensus.item_decided(item.campaign, counts, attributes=list(values))


def _counted(item: Item, count: int, decided_at: int | None = None) -> None:
    """An item's judgment was counted: its last one (the campaign's raters per item, or for a
    decided item the count it was decided at, and any judgment after that) triggers its consensus
    after commit. The judgment is the rater's work and is kept whatever happens to the task: with
    the broker down the label waits for the campaign's next recomputation (a button,
    ``manage.py aggregate``, and every quality_safety dataset build, which recomputes its campaigns
    first)."""
    needed = item.campaign.raters_per_item if decided_at is None else decided_at
    if count >= needed:
        queueing.enqueue("annotation.tasks.item_aggregate_task", item.pk, best_effort=True)


def _normalise(answers: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(answers, Mapping):
        raise InvalidAnswers("answers must be an object mapping each question to yes, no or maybe.")
    out: dict[str, str] = {}
    for attribute, value in answers.items():
        if value is None or value == "":
            continue
        if not isinstance(value, str) or value.lower() not in rules.VALUES:
            raise InvalidAnswers(f"{attribute}: {value!r} is not an answer (yes, no or maybe).")
        out[str(attribute)] = value.lower()
    return out


def judgment_values(*, campaign: Campaign, answers: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """attribute → (value counted, value answered or None when not asked), for every question.

    The cascade applies (``annotation.rules.cascade`` over the questions' ``requires_yes``): SSI's
    specific and interesting, the groundedness evaluation's well-known question. A question the
    cascade does not ask counts "no", whatever was sent for it (a form without JavaScript shows
    every question). Every asked question needs an answer.
    """
    questions = campaign_questions(campaign)
    if not questions:
        raise InvalidAnswers("This campaign has no rating questions; its items are not rated this way.")
    known = {q.attribute for q in questions}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise InvalidAnswers(
            f"{unknown[0]}: not a question of this campaign (questions: {', '.join(sorted(known))})."
        )
    gates = question_gates(questions)
    asked = set(rules.asked(answers, gates=gates))
    missing = [q.label for q in questions if q.attribute in asked and q.attribute not in answers]
    if missing:
        raise InvalidAnswers(f"{missing[0]}: please answer yes, no or maybe.")
    try:
        cascaded = rules.cascade(answers, gates=gates)
    except ValueError as exc:
        raise InvalidAnswers(str(exc)) from None
    return {a: (cascaded[a], answers[a] if a in asked else None) for a, _ in gates}


def _record_gold(*, item: Item, worker: User, values: Mapping[str, tuple[str, str | None]]) -> None:
    campaign = item.campaign
    correct = all(
        values.get(attribute, (None,))[0] == expected for attribute, expected in item.gold_answers.items()
    )
    quality, _ = WorkerQuality.objects.select_for_update().get_or_create(campaign=campaign, worker=worker)
    if item.kind == Item.Kind.GOLD:
        quality.gold_seen += 1
        quality.gold_correct += int(correct)
        accuracy = quality.gold_correct / quality.gold_seen
        if quality.gold_seen >= campaign.gold_min and accuracy < campaign.gold_threshold:
            quality.blocked = True
            quality.blocked_reason = (
                f"Your accuracy on check items is {accuracy:.0%}, under the {campaign.gold_threshold:.0%} "
                "this campaign needs. An admin can lift the block."
            )
    else:
        quality.qualification_seen += 1
        quality.qualification_correct += int(correct)
        total = Item.objects.filter(campaign=campaign, kind=Item.Kind.QUALIFICATION).count()
        if quality.qualification_seen >= total:
            accuracy = quality.qualification_correct / max(total, 1)
            quality.qualified = accuracy >= (campaign.qualification_threshold or 0)
            if not quality.qualified:
                quality.blocked = True
                quality.blocked_reason = (
                    f"You answered {accuracy:.0%} of the qualification items as expected; "
                    f"this campaign needs {campaign.qualification_threshold:.0%}."
                )
    quality.save()


@transaction.atomic
def worker_unblock(*, campaign: Campaign, worker: User) -> WorkerQuality:
    """Lift a worker's block (gold or qualification) in ``campaign``; their record stays."""
    quality, _ = WorkerQuality.objects.select_for_update().get_or_create(campaign=campaign, worker=worker)
    quality.blocked = False
    quality.blocked_reason = ""
    if quality.qualified is False:
        quality.qualified = True
    quality.save()
    return quality
