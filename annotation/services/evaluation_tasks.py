"""A worker's answer to an evaluation set's crowd tasks: the human baseline's response (the next turn
of a context, written by the worker) and a side-by-side choice (the better of two responses, or a tie).

Leases, skips and expiry are the rating hot path's (``annotation.services.assignments``): these
services take the place of ``judgment_submit`` for the two kinds, with its rules (the worker's own
live lease; the same submission again returns the stored one, another is refused).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation import rules
from annotation.errors import AssignmentConflict, InvalidAnswers
from annotation.models import Assignment, Campaign, Item
from annotation.services.assignments import (
    Submission,
    check_lease_held,
    locked_assignment,
    submission_complete,
)
from annotation.services.evaluations import evaluation_responses_enqueue
from dialogs.evaluation_responses import evaluation_response_add
from dialogs.models import HUMAN_RESPONDER, EvaluationContext, EvaluationResponse, EvaluationSet

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

OTHER_ANSWERS = "This assignment was already submitted with other answers."


@dataclass(frozen=True)
class HumanResponseSubmission:
    assignment: Assignment
    response: EvaluationResponse
    created: bool  # False: the same response was already stored


def human_response_submit(*, assignment_id: int, worker: User, text: str) -> HumanResponseSubmission:
    """Store the worker's response to the context of their human baseline assignment: the human
    baseline's ``EvaluationResponse`` (``evaluation_response_add``, written by the worker), in the
    same transaction as the assignment's submission. After the commit the response goes into the
    set's blind rating campaigns (``evaluation_responses_enqueue``), where its writer is never
    given it (the item's author).

    ``InvalidAnswers`` for an empty or too long text, or an assignment of another kind; the lease
    and repeat rules of ``judgment_submit``; ``EvaluationResponseExists`` (409) when the context
    has a human response already.
    """
    cleaned = text.replace("\r\n", "\n").strip() if isinstance(text, str) else ""
    if not cleaned:
        raise InvalidAnswers("Response: write the next turn of the conversation.")
    if len(cleaned) > settings.TURN_MAX_CHARS:
        raise InvalidAnswers(
            f"Response: at most {settings.TURN_MAX_CHARS:,} characters, like any turn; "
            f"yours has {len(cleaned):,}."
        )
    submitted = {"response": cleaned}
    with transaction.atomic():
        locked = locked_assignment(assignment_id, worker)
        assignment = locked.assignment
        item = assignment.item
        if item.campaign.kind != Campaign.Kind.HUMAN_RESPONSE:
            raise InvalidAnswers("This campaign is not a human baseline; its items are not written.")
        context = EvaluationContext.objects.select_related("evaluation_set").get(items__pk=item.pk)
        if assignment.state == Assignment.State.SUBMITTED:
            if assignment.submission == submitted:
                stored = EvaluationResponse.objects.get(context=context, responder=HUMAN_RESPONDER)
                return HumanResponseSubmission(assignment, stored, created=False)
            raise AssignmentConflict(OTHER_ANSWERS)
        check_lease_held(locked)
        try:
            response = evaluation_response_add(
                context=context, responder=HUMAN_RESPONDER, text=cleaned, written_by=worker
            )
        except ValueError as exc:  # the text as a turn (turn_add): say it about the response
            raise InvalidAnswers(f"Response: {exc}") from None
        now = timezone.now()
        marked = Assignment.objects.filter(
            pk=assignment.pk, state=Assignment.State.LEASED, expires_at__gt=now
        ).update(state=Assignment.State.SUBMITTED, submitted_at=now, submission=submitted)
        if not marked:  # cannot happen under the row lock; refuse rather than count it twice
            raise AssignmentConflict("The lease on this item ran out; your response was not stored.")
        Item.objects.filter(pk=item.pk).update(judgment_count=F("judgment_count") + 1)
        assignment.state, assignment.submitted_at, assignment.submission = (
            Assignment.State.SUBMITTED,
            now,
            submitted,
        )
        evaluation_set = context.evaluation_set
        transaction.on_commit(lambda: _rate_blind(evaluation_set), robust=True)
    return HumanResponseSubmission(assignment, response, created=True)


def _rate_blind(evaluation_set: EvaluationSet) -> None:
    """After a human response is committed: into the blind rating campaigns. A failure is logged,
    not the worker's: the next enqueue of the set (any response, or the admin's button) takes it."""
    try:
        evaluation_responses_enqueue(evaluation_set=evaluation_set)
    except Exception:
        logger.exception(
            "evaluation set %s: the new human response was not put up for rating", evaluation_set
        )


def pairwise_submit(*, assignment_id: int, worker: User, choice: str) -> Submission:
    """Store the worker's side-by-side choice: ``"1"`` (the response shown first), ``"2"`` (the one
    shown second) or ``"tie"``. It is stored mapped back to the campaign's responders, as the
    judgment ``rules.A_BETTER`` (yes = a, no = b, maybe = tie; ``rules.pairwise_choice`` with the
    order recorded on the item), the choice itself as the assignment's submission. The item's last
    judgment triggers its consensus (a, b or tie by majority) after commit.

    ``InvalidAnswers`` for another choice or an assignment of another kind; the lease and repeat
    rules of ``judgment_submit``.
    """
    if choice not in rules.PAIRWISE_CHOICES:
        raise InvalidAnswers("Choice: choose Response 1, Response 2 or a tie (send 1, 2 or tie).")
    submitted = {"choice": choice}
    with transaction.atomic():
        locked = locked_assignment(assignment_id, worker)
        assignment = locked.assignment
        item = assignment.item
        if item.campaign.kind != Campaign.Kind.PAIRWISE:
            raise InvalidAnswers(
                "This campaign is not a side-by-side comparison; its items are not compared."
            )
        if assignment.state == Assignment.State.SUBMITTED:
            if assignment.submission == submitted:
                return Submission(assignment, list(assignment.judgments.order_by("id")), created=False)
            raise AssignmentConflict(OTHER_ANSWERS)
        check_lease_held(locked)
        pair = Item.objects.values_list("pair", flat=True).get(pk=item.pk) or {}
        value = rules.PAIRWISE_VALUES[rules.pairwise_choice(choice, first=pair.get("first", ""))]
        judgments = submission_complete(
            assignment=assignment,
            worker=worker,
            values={rules.A_BETTER: (value, value)},
            submission=submitted,
            judged=locked.judged,
        )
    return Submission(assignment, judgments, created=True)
