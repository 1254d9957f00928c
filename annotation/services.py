"""Every write of the annotation engine: campaigns, assignment, submission, consensus."""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from annotation import queue, rules, selectors
from annotation.models import (
    AggregationRun,
    Assignment,
    Campaign,
    ConsensusLabel,
    Item,
    Judgment,
    Rewrite,
    SafetyObjective,
    WorkerQuality,
)
from annotation.questions import DEFAULT_RATERS, campaign_questions
from dialogs.models import Candidate, Dialog, Role, Speaker
from groundwork import queueing
from toolset.models import Tool
from toolset.services import ToolResult, ToolsetSessionRefused, toolset_query

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000


# --- errors, each with the HTTP status an API view answers with ------------------------------


class AnnotationError(Exception):
    status = 400


class AssignmentNotFound(AnnotationError):
    status = 404


class AssignmentForbidden(AnnotationError):
    status = 403


class AssignmentConflict(AnnotationError):
    status = 409


class InvalidAnswers(AnnotationError):
    status = 400


class WorkerBlocked(AnnotationError):
    status = 403


# --- campaigns ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialogFilters:
    purpose: str | None = None
    role: str | None = None  # role slug
    model_version: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "role": self.role,
            "model_version": self.model_version,
            "created_from": self.created_from.isoformat() if self.created_from else None,
            "created_to": self.created_to.isoformat() if self.created_to else None,
        }


@transaction.atomic
def campaign_create(
    *,
    name: str,
    kind: str,
    filters: DialogFilters | None = None,
    raters_per_item: int | None = None,
    objectives: Sequence[str] | None = None,
    instructions: str = "",
    empty: bool = False,
    created_by: Any = None,
) -> Campaign:
    """A campaign whose items are the model turns of the dialogs matching ``filters``.

    Safety campaigns rate the objectives named in ``objectives`` (slugs; default: every active
    one). With ``empty`` the campaign gets no items (to import judgments into, say).
    """
    if Campaign.objects.filter(name=name).exists():
        raise AnnotationError(f"A campaign named {name!r} already exists.")
    if kind not in Campaign.Kind.values:
        raise AnnotationError(f"Unknown campaign kind {kind!r} (one of {', '.join(Campaign.Kind.values)}).")
    raters = DEFAULT_RATERS[Campaign.Kind(kind)] if raters_per_item is None else raters_per_item
    if raters < 1:
        raise AnnotationError("Raters per item must be at least 1.")
    if objectives and kind != Campaign.Kind.SAFETY:
        raise AnnotationError("Objectives are for safety campaigns only.")
    filters = filters or DialogFilters()
    if filters.purpose and filters.purpose not in Dialog.Purpose.values:
        raise AnnotationError(
            f"Unknown dialog purpose {filters.purpose!r} (one of {', '.join(Dialog.Purpose.values)})."
        )
    if filters.role and not Role.objects.filter(slug=filters.role).exists():
        raise AnnotationError(f"There is no role with the slug {filters.role!r}.")
    campaign = Campaign.objects.create(
        name=name,
        kind=kind,
        raters_per_item=raters,
        instructions=instructions,
        filters=filters.as_json(),
        created_by=created_by,
    )
    if kind == Campaign.Kind.SAFETY:
        campaign.objectives.set(_objectives(objectives))
    if not empty:
        campaign_add_dialogs(campaign=campaign, dialogs=_filtered_dialogs(filters))
    return campaign


def _objectives(slugs: Sequence[str] | None) -> list[SafetyObjective]:
    if not slugs:
        chosen = list(SafetyObjective.objects.filter(active=True))
        if not chosen:
            raise AnnotationError("There is no active safety objective to rate.")
        return chosen
    found = {o.slug: o for o in SafetyObjective.objects.filter(slug__in=slugs)}
    missing = [slug for slug in slugs if slug not in found]
    if missing:
        raise AnnotationError(f"Unknown safety objective(s): {', '.join(missing)}.")
    return [found[slug] for slug in slugs]


def _filtered_dialogs(filters: DialogFilters) -> Any:
    dialogs = Dialog.objects.all()
    if filters.purpose:
        dialogs = dialogs.filter(purpose=filters.purpose)
    if filters.role:
        dialogs = dialogs.filter(role__slug=filters.role)
    if filters.model_version:
        dialogs = dialogs.filter(model_version=filters.model_version)
    if filters.created_from:
        dialogs = dialogs.filter(created_at__gte=filters.created_from)
    if filters.created_to:
        dialogs = dialogs.filter(created_at__lt=filters.created_to)
    return dialogs


def campaign_add_dialogs(*, campaign: Campaign, dialogs: Any) -> int:
    """Add every model turn of ``dialogs`` as an item, with the turns before it as context.

    Turns already in the campaign are left alone. Returns the number of items added.
    """
    before = Item.objects.filter(campaign=campaign).count()
    batch: list[Item] = []
    for dialog in dialogs.prefetch_related("turns").order_by("id").iterator(chunk_size=500):
        context: list[dict[str, str]] = []
        for turn in dialog.turns.all():
            if turn.speaker == Speaker.MODEL:
                batch.append(
                    Item(
                        campaign=campaign,
                        key=f"{dialog.external_id}#{turn.index}",
                        turn=turn,
                        author_id=dialog.created_by_id,
                        context=list(context),
                        response=turn.text,
                        open_slots=campaign.raters_per_item,
                    )
                )
            context.append({"speaker": turn.speaker, "text": turn.text})
        if len(batch) >= BATCH_SIZE:
            Item.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    Item.objects.bulk_create(batch, ignore_conflicts=True)
    return Item.objects.filter(campaign=campaign).count() - before


# --- assignment -----------------------------------------------------------------------------


def lease_duration() -> timedelta:
    return timedelta(minutes=settings.ANNOTATION_LEASE_MINUTES)


def assign_next(*, worker: Any, campaign: Campaign, now: datetime | None = None) -> Assignment | None:
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


def _assign_from_standing(*, worker: Any, campaign: Campaign, now: datetime) -> Assignment | None:
    """``assign_next`` from the worker's standing: their live lease, a block, qualification and
    gold items first, then the next open item."""
    here = queue.standing(worker_id=worker.pk, campaign_id=campaign.pk, now=now)
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
    if leased is None and expire_leases(campaign=campaign, now=now):
        leased = _lease_open_item(campaign=campaign, worker=worker, now=now)
    return leased


def _lease_open_item(
    *, campaign: Campaign, worker: Any, now: datetime, wait: bool = True
) -> Assignment | None:
    return queue.lease_open_item(
        campaign=campaign, worker_id=worker.pk, now=now, expires_at=now + lease_duration(), wait=wait
    )


def _seen_by(worker: Any) -> Any:
    return Assignment.objects.filter(worker=worker).values("item_id")


def _lease(*, item: Item, campaign: Campaign, worker: Any, now: datetime) -> Assignment:
    item.campaign = campaign  # the caller has it: spares a query when the task is shown
    return queue.lease_item(item=item, worker_id=worker.pk, now=now, expires_at=now + lease_duration())


def _next_special(*, campaign: Campaign, worker: Any, kind: str) -> Item | None:
    """The next gold or qualification item the worker has not seen (every worker sees each)."""
    return (
        Item.objects.filter(campaign=campaign, kind=kind)
        .exclude(pk__in=_seen_by(worker))
        .order_by("id")
        .first()
    )


def _gold_due(*, campaign: Campaign, worker: Any) -> bool:
    """Golds come at ``gold_rate`` of a worker's items, spread evenly (deterministic)."""
    counts = Assignment.objects.filter(worker=worker, item__campaign=campaign).aggregate(
        total=Count("id"), gold=Count("id", filter=Q(item__kind=Item.Kind.GOLD))
    )
    return counts["gold"] < math.floor((counts["total"] + 1) * campaign.gold_rate)


def expire_leases(*, campaign: Campaign | None = None, now: datetime | None = None, limit: int = 500) -> int:
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
        Item.objects.filter(pk=item_id, kind=Item.Kind.NORMAL).update(
            open_slots=F("open_slots") + freed[item_id]
        )


def next_assignment(
    *, worker: Any, kind: str | None = None, campaign_id: int | None = None
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
            assignment = assign_next(worker=worker, campaign=campaign)
        except WorkerBlocked as exc:
            blocked = blocked or exc
            continue
        if assignment is not None:
            return assignment
    if blocked is not None:
        raise blocked  # nothing else to do: say why, rather than "nothing left"
    return None


@transaction.atomic
def skip_assignment(*, assignment_id: int, worker: Any) -> Assignment:
    """Give the item back; it is not offered to this worker again."""
    assignment = _locked_assignment(assignment_id, worker).assignment
    if assignment.state != Assignment.State.LEASED:
        raise AssignmentConflict(f"This assignment is {assignment.state}; only a leased item can be skipped.")
    assignment.state = Assignment.State.SKIPPED
    assignment.save(update_fields=["state"])
    _give_back_slots([assignment.item_id])
    return assignment


def _locked_assignment(assignment_id: int, worker: Any) -> queue.Found:
    """The worker's assignment, its row locked, with its item and campaign."""
    return _owned(queue.find_assignment(assignment_id, now=timezone.now(), lock=True), worker)


def _owned(found: queue.Found | None, worker: Any) -> queue.Found:
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


def submit_judgment(*, assignment_id: int, worker: Any, answers: Mapping[str, Any]) -> Submission:
    """Store the worker's answers for their assignment, all or nothing.

    The same submission again returns the stored one (``created`` False); other answers on a
    submitted assignment, an expired or skipped lease, or another worker's assignment are
    refused with a message. The item's last judgment triggers its consensus after commit.

    On PostgreSQL a live lease on a normal item is submitted without a transaction: a read, then
    one statement that stores everything only if the lease is still held (``queue.store_submission``).
    Everything else (a repeat, a lease that ran out meanwhile, gold, SQLite) takes the locked path.
    """
    if queue.stores_atomically():
        found = _owned(queue.find_assignment(assignment_id, now=timezone.now(), lock=False), worker)
        stored = _submit_if_leased(found, answers=answers)
        if stored is not None:
            return stored
    with transaction.atomic():
        locked = _locked_assignment(assignment_id, worker)
        assignment = locked.assignment
        submitted = _normalise(answers)
        if assignment.state == Assignment.State.SUBMITTED:
            if assignment.submission == submitted:
                return Submission(assignment, list(assignment.judgments.order_by("id")), created=False)
            raise AssignmentConflict("This assignment was already submitted with other answers.")
        _check_live(locked)
        values = judgment_values(campaign=assignment.item.campaign, answers=submitted)
        judgments = _complete(assignment=assignment, worker=worker, values=values, submission=submitted)
    return Submission(assignment, judgments, created=True)


def _submit_if_leased(found: queue.Found, *, answers: Mapping[str, Any]) -> Submission | None:
    """``submit_judgment``'s path without a lock, for a live lease on a normal item; None when it
    does not apply or the lease was lost meanwhile (nothing written: the locked path decides)."""
    assignment = found.assignment
    item = assignment.item
    if not (found.live and assignment.state == Assignment.State.LEASED and item.kind == Item.Kind.NORMAL):
        return None
    submitted = _normalise(answers)
    values = judgment_values(campaign=item.campaign, answers=submitted)
    stored = queue.store_submission(assignment, values, now=timezone.now(), submission=submitted)
    if stored is None:
        return None
    judgments, count = stored
    _counted(item, count)
    return Submission(assignment, judgments, created=True)


LEASE_LOST = (
    "The lease on this item ran out and the item went back to the pool; "
    "your answers were not stored. Ask for the next item."
)


def _check_live(locked: queue.Found) -> None:
    """Refuse a submission on a lease that is not held any more (expired or skipped)."""
    if locked.assignment.state != Assignment.State.LEASED or not locked.live:
        raise AssignmentConflict(LEASE_LOST)


def _complete(
    *,
    assignment: Assignment,
    worker: Any,
    values: Mapping[str, tuple[str, str | None]],
    submission: dict[str, Any],
) -> list[Judgment]:
    """Store the judgments and mark the assignment submitted; the item's last judgment triggers
    its consensus after commit, a gold or qualification item updates the worker's record."""
    item = assignment.item
    stored = queue.store_submission(assignment, values, now=timezone.now(), submission=submission)
    if stored is None:  # the lease ran out since it was locked and checked
        raise AssignmentConflict(LEASE_LOST)
    judgments, count = stored
    if count is None:  # a gold or qualification item: no count, the worker's record instead
        _record_gold(item=item, worker=worker, values=values)
    else:
        _counted(item, count)
    return judgments


def _counted(item: Item, count: int) -> None:
    """An item's judgment was counted: its last one triggers its consensus after commit. The
    judgment is the rater's work and is kept whatever happens to the task: with the broker down
    the label waits for the campaign's next recomputation (a button, ``manage.py aggregate``, and
    every quality_safety dataset build, which recomputes its campaigns first)."""
    if count >= item.campaign.raters_per_item:
        from annotation.tasks import aggregate_item_task

        queueing.enqueue(aggregate_item_task, item.pk, best_effort=True)


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

    SSI applies the cascade: a question the cascade does not ask counts "no", whatever was
    sent for it (a form without JavaScript shows every question). Every asked question needs
    an answer.
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
    if campaign.kind == Campaign.Kind.SSI:
        asked = set(rules.ssi_asked(answers))
        missing = [q.label for q in questions if q.attribute in asked and q.attribute not in answers]
        if missing:
            raise InvalidAnswers(f"{missing[0]}: please answer yes, no or maybe.")
        try:
            cascaded = rules.ssi_cascade({a: answers.get(a) for a in rules.SSI_ATTRIBUTES})
        except ValueError as exc:
            raise InvalidAnswers(str(exc)) from None
        return {a: (cascaded[a], answers[a] if a in asked else None) for a in rules.SSI_ATTRIBUTES}
    missing = [q.label for q in questions if q.attribute not in answers]
    if missing:
        raise InvalidAnswers(f"{missing[0]}: please answer yes, no or maybe.")
    return {q.attribute: (answers[q.attribute], answers[q.attribute]) for q in questions}


def _record_gold(*, item: Item, worker: Any, values: Mapping[str, tuple[str, str | None]]) -> None:
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
def worker_unblock(*, campaign: Campaign, worker: Any) -> WorkerQuality:
    """Lift a worker's block (gold or qualification) in ``campaign``; their record stays."""
    quality, _ = WorkerQuality.objects.select_for_update().get_or_create(campaign=campaign, worker=worker)
    quality.blocked = False
    quality.blocked_reason = ""
    if quality.qualified is False:
        quality.qualified = True
    quality.save()
    return quality


# --- rewrites (METHOD.md §4) ------------------------------------------------------------------

# A Markdown link is ``[text](url)``: the text holds no "]", the URL may hold one level of
# parentheses (Wikipedia's "Mercury_(planet)"). This is the part from the "]" on; the "[" that
# opens the link is found by ``_markdown_links`` (a regex searching for both rescans the text
# after every "[", quadratic in a text full of them). Possessive: what the URL took is never
# given back, since a shorter URL cannot be followed by its closing ")".
_LINK_TARGET = re.compile(r"\]\((https?://(?:[^\s()]|\([^\s()]*+\))++)\)")
_BARE_URL = re.compile(r"https?://[^\s<>\[\]\"']+")
# Sentence punctuation after a bare URL is not part of it.
_URL_TRAILING = ".,;:!?"


@dataclass(frozen=True)
class RewriteSubmission:
    assignment: Assignment
    rewrite: Rewrite
    judgments: list[Judgment]
    created: bool  # False: the same submission was already stored


CANDIDATE_LABELS = ("correct", "incorrect")
# More than any rewrite of TURN_MAX_CHARS characters can sensibly cite.
CITATIONS_MAX = 100


def _markdown_links(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, url) of each Markdown link, left to right, in time linear in the text.

    The links ``re.finditer(r"\\[[^\\]]*\\]\\((url)\\)")`` would find, without its rescans: a link
    opened by a "[" ends at the first "]" after it, so when that "]" is no link's, neither is any
    "[" before it, and the search goes on after it.
    """
    position = 0
    while (start := text.find("[", position)) >= 0:
        close = text.find("]", start + 1)
        if close < 0:
            return
        target = _LINK_TARGET.match(text, close)
        if target is None:
            position = close + 1
            continue
        yield start, target.end(), target.group(1)
        position = target.end()


def cited_urls(text: str) -> list[str]:
    """Every URL a rewrite cites, in order, once: Markdown links' targets and bare URLs."""
    urls: list[str] = []
    rest: list[str] = []
    position = 0
    for start, end, url in _markdown_links(text):
        urls.append(url)
        rest += [text[position:start], " "]
        position = end
    rest.append(text[position:])
    for match in _BARE_URL.finditer("".join(rest)):
        url = match.group(0).rstrip(_URL_TRAILING)
        if url.endswith(")") and url.count("(") < url.count(")"):
            url = url[:-1]  # "(see https://x)": the parenthesis closes the sentence's
        urls.append(url)
    return list(dict.fromkeys(urls))


def rewrite_research(*, assignment_id: int, worker: Any, query: str) -> list[ToolResult]:
    """Search the corpus for the worker's held assignment; the call is logged in its session.

    Raises ``AnnotationError``s like a submission (another worker's, expired) and
    ``toolset.services.ToolsetQueryError`` for a blank or too long query.
    """
    with transaction.atomic():
        assignment = _research_assignment(_locked_assignment(assignment_id, worker))
    # Outside the assignment's lock: a search must not hold it.
    return toolset_query(
        session=selectors.research_session(assignment), query=query, actor_user=worker, tool=Tool.SEARCH
    )


def _research_assignment(found: queue.Found) -> Assignment:
    """The worker's assignment if research may be done on it now: a live lease on a rewrite item."""
    if found.assignment.item.campaign.kind != Campaign.Kind.GROUNDEDNESS_REWRITE:
        raise InvalidAnswers("Research is part of rewrite campaigns only.")
    _check_live(found)
    return found.assignment


def research_session_check(*, session: str, user: Any) -> None:
    """Who may query the toolset in ``session`` (``settings.TOOLSET_SESSION_CHECK``; toolset imports
    no other app, so it asks through that dotted path).

    A research session (``assignment-<id>``) is its assignment's worker's alone, and only while
    they hold the lease on a rewrite item, as on the rewrite page: anyone else's queries there
    would show on that worker's page and move their "same query again → next result" cursor.
    Raises ``ToolsetSessionRefused`` with the status and message of the ``AnnotationError`` that
    says why; any other session is left alone.
    """
    if not session.startswith(selectors.RESEARCH_SESSION_PREFIX):
        return
    number = session.removeprefix(selectors.RESEARCH_SESSION_PREFIX)
    try:
        if not (number.isascii() and number.isdigit() and len(number) <= 18):
            raise AssignmentNotFound("There is no such assignment.")
        found = queue.find_assignment(int(number), now=timezone.now(), lock=False)
        _research_assignment(_owned(found, user))
    except AnnotationError as exc:
        raise ToolsetSessionRefused(f"{session}: {exc}", status=exc.status) from None


def submit_rewrite(
    *,
    assignment_id: int,
    worker: Any,
    claims_external: bool,
    common_knowledge: bool | None,
    rewrite: str = "",
    citations: Sequence[str] = (),
    candidate_labels: Mapping[int | str, str] | None = None,
) -> RewriteSubmission:
    """Store a worker's rewrite-task answer, all or nothing (METHOD.md §4).

    No external claims: the turn is good. Claims all known to be true: no research. Otherwise
    ``rewrite`` is required, must differ from the response, and every URL it cites (and every
    one of ``citations``) must be a result shown in the assignment's research session. The same
    submission again returns the stored one; lease and ownership rules are those of
    ``submit_judgment``. Judgments ``claims_external`` and ``common_knowledge`` (counted "no"
    when not asked) feed the consensus.
    """
    if not isinstance(claims_external, bool):
        raise InvalidAnswers("Does it make claims about the external world? Please answer yes or no.")
    if claims_external and not isinstance(common_knowledge, bool):
        raise InvalidAnswers("Do you know all of them to be true? Please answer yes or no.")
    labels = {str(candidate): str(value) for candidate, value in (candidate_labels or {}).items() if value}
    bad = sorted(value for value in labels.values() if value not in CANDIDATE_LABELS)
    if bad:
        raise InvalidAnswers(f"Candidates: {bad[0]!r} is not a label (correct or incorrect).")
    researched = claims_external and bool(common_knowledge) is False
    text = rewrite.replace("\r\n", "\n").strip() if researched else ""
    if len(text) > settings.TURN_MAX_CHARS:
        raise InvalidAnswers(
            f"Rewrite: at most {settings.TURN_MAX_CHARS:,} characters, like any turn; "
            f"yours has {len(text):,}."
        )
    citations = [str(c).strip() for c in citations if str(c).strip()] if researched else []
    if len(citations) > CITATIONS_MAX:
        raise InvalidAnswers(f"Citations: at most {CITATIONS_MAX}; you sent {len(citations)}.")
    # Parsed before the assignment's row is locked: nothing slow runs while the lock is held.
    urls = list(dict.fromkeys([*cited_urls(text), *citations]))
    submitted: dict[str, Any] = {
        rules.CLAIMS_EXTERNAL: claims_external,
        rules.COMMON_KNOWLEDGE: bool(common_knowledge) if claims_external else None,
        "rewrite": text,
        "citations": citations,
        "candidates": labels,
    }
    with transaction.atomic():
        locked = _locked_assignment(assignment_id, worker)
        assignment = locked.assignment
        if assignment.state == Assignment.State.SUBMITTED:
            if assignment.submission == submitted:
                return RewriteSubmission(
                    assignment, assignment.rewrite, list(assignment.judgments.order_by("id")), created=False
                )
            raise AssignmentConflict("This assignment was already submitted with other answers.")
        _check_live(locked)
        item = assignment.item
        if item.campaign.kind != Campaign.Kind.GROUNDEDNESS_REWRITE:
            raise InvalidAnswers("This campaign is not a rewrite campaign; its items are not rewritten.")
        known = {
            str(pk) for pk in Candidate.objects.filter(turn_id=item.turn_id).values_list("pk", flat=True)
        }
        unknown = sorted(set(labels) - known) if item.turn_id else sorted(labels)
        if unknown:
            raise InvalidAnswers(f"Candidates: {unknown[0]} is not a sampled candidate of this turn.")
        calls = selectors.research_calls(assignment)
        if researched:
            if not text:
                raise InvalidAnswers(
                    "Rewrite: the claims need research, so a rewrite is required. "
                    "Replace unsupported claims with what the sources say."
                )
            if text == item.response.replace("\r\n", "\n").strip():
                raise InvalidAnswers(
                    "Rewrite: it is the same as the response; change what the sources do not support."
                )
            shown = {result.get("url") for call in calls for result in call.results if result.get("url")}
            for url in urls:
                if url not in shown:
                    raise InvalidAnswers(
                        f"{url} was not among the search results shown for this item; "
                        "cite only sources you found in the research panel."
                    )
        values: dict[str, tuple[str, str | None]] = {
            rules.CLAIMS_EXTERNAL: (rules.YES if claims_external else rules.NO,) * 2,
            rules.COMMON_KNOWLEDGE: (
                (rules.YES if common_knowledge else rules.NO,) * 2 if claims_external else (rules.NO, None)
            ),
        }
        judgments = _complete(assignment=assignment, worker=worker, values=values, submission=submitted)
        stored = Rewrite.objects.create(
            assignment=assignment,
            claims_external=claims_external,
            common_knowledge=bool(common_knowledge) and claims_external,
            text=text,
            cited_urls=urls,
            tool_call_ids=[call.pk for call in calls],
            candidate_labels=labels,
        )
    return RewriteSubmission(assignment, stored, judgments, created=True)


# --- consensus ------------------------------------------------------------------------------


def _labels(
    campaign: Campaign,
    objectives: list[str],
    counts: Mapping[str, rules.Counts],
    raters: int,
    all_no_raters: int,
) -> dict[str, rules.Label]:
    if campaign.kind == Campaign.Kind.SSI:
        return rules.ssi_labels_from_counts(counts, raters=raters)
    if campaign.kind == Campaign.Kind.SAFETY:
        return rules.safety_labels_from_counts(
            counts, objectives=objectives, raters=raters, all_no_raters=all_no_raters
        )
    attributes = [q.attribute for q in campaign_questions(campaign)]
    return rules.labels_from_counts(counts, attributes=attributes, raters=raters)


_UPSERT_LABELS = """
INSERT INTO annotation_consensuslabel
    (item_id, attribute, label, yes, "no", maybe, yes_fraction, rules_version, computed_at)
SELECT t.*, %(version)s, %(now)s
FROM unnest(%(item)s::bigint[], %(attribute)s::varchar[], %(label)s::smallint[], %(yes)s::smallint[],
            %(no)s::smallint[], %(maybe)s::smallint[], %(fraction)s::float8[]) AS t
ON CONFLICT (item_id, attribute) DO UPDATE SET
    label = excluded.label, yes = excluded.yes, "no" = excluded."no", maybe = excluded.maybe,
    yes_fraction = excluded.yes_fraction, rules_version = excluded.rules_version,
    computed_at = excluded.computed_at
"""


def _store_labels(rows: dict[int, dict[str, rules.Label]]) -> int:
    """Upsert labels: on PostgreSQL one statement over arrays, elsewhere the ORM's bulk upsert."""
    flat = [(item_id, label) for item_id, labels in rows.items() for label in labels.values()]
    if connection.vendor == "postgresql":
        if flat:
            with connection.cursor() as cursor:
                cursor.execute(
                    _UPSERT_LABELS,
                    {
                        "item": [item_id for item_id, _ in flat],
                        "attribute": [label.attribute for _, label in flat],
                        "label": [label.label for _, label in flat],
                        "yes": [label.yes for _, label in flat],
                        "no": [label.no for _, label in flat],
                        "maybe": [label.maybe for _, label in flat],
                        "fraction": [label.yes_fraction for _, label in flat],
                        "version": rules.RULES_VERSION,
                        "now": timezone.now(),
                    },
                )
        return len(flat)
    objects = [
        ConsensusLabel(
            item_id=item_id,
            attribute=label.attribute,
            label=label.label,
            yes=label.yes,
            no=label.no,
            maybe=label.maybe,
            yes_fraction=label.yes_fraction,
            rules_version=rules.RULES_VERSION,
        )
        for item_id, labels in rows.items()
        for label in labels.values()
    ]
    ConsensusLabel.objects.bulk_create(
        objects,
        update_conflicts=True,
        unique_fields=["item", "attribute"],
        update_fields=["label", "yes", "no", "maybe", "yes_fraction", "rules_version", "computed_at"],
        batch_size=BATCH_SIZE,
    )
    return len(objects)


def _aggregate_items(campaign: Campaign, item_filter: Q) -> int:
    """Consensus for the normal items matching ``item_filter`` that have judgments."""
    objectives = list(campaign.objectives.values_list("slug", flat=True))
    grouped = (
        Judgment.objects.filter(item_filter, item__campaign=campaign, item__kind=Item.Kind.NORMAL)
        .values_list("item_id", "attribute", "value")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[int, dict[str, rules.Counts]] = defaultdict(dict)
    raters: dict[int, int] = {}
    for item_id, attribute, value, n in grouped:
        current = counts[item_id].get(attribute, rules.Counts())
        counts[item_id][attribute] = rules.Counts(
            yes=current.yes + (n if value == rules.YES else 0),
            no=current.no + (n if value == rules.NO else 0),
            maybe=current.maybe + (n if value == rules.MAYBE else 0),
        )
    for item_id, by_attribute in counts.items():
        raters[item_id] = max(c.total for c in by_attribute.values())
    all_no: dict[int, int] = {}
    if campaign.kind == Campaign.Kind.SAFETY and counts:
        # Raters who answered "no" on every objective of the item.
        said_other = Judgment.objects.filter(assignment=OuterRef("pk")).exclude(value=rules.NO)
        all_no = dict(
            Assignment.objects.filter(item_id__in=list(counts), state=Assignment.State.SUBMITTED)
            .exclude(Exists(said_other))
            .values_list("item_id")
            .annotate(n=Count("id"))
            .order_by()
        )
    rows = {
        item_id: _labels(
            campaign,
            objectives,
            by_attribute,
            max(campaign.raters_per_item, raters[item_id]),
            all_no.get(item_id, 0),
        )
        for item_id, by_attribute in counts.items()
    }
    _store_labels(rows)
    return len(rows)


# Per (item, attribute) counts of the campaign's normal items in an id range, only where they
# differ from the stored label (or its rules version): a recomputation of an unchanged campaign
# reads and writes nothing more than this one GROUP BY. raters: those who judged the item.
_CHANGED_COUNTS = """
SELECT s.item_id, s.attribute, s.raters, s.yes, s."no", s.maybe
FROM (
    SELECT j.item_id, j.attribute, i.judgment_count AS raters,
           COUNT(*) FILTER (WHERE j.value = 'yes') AS yes,
           COUNT(*) FILTER (WHERE j.value = 'no') AS "no",
           COUNT(*) FILTER (WHERE j.value = 'maybe') AS maybe
    FROM annotation_judgment j
    JOIN annotation_item i ON i.id = j.item_id
    WHERE i.campaign_id = %(campaign)s AND i.kind = 'normal' AND j.item_id >= %(low)s AND j.item_id < %(high)s
    GROUP BY j.item_id, j.attribute, i.judgment_count
) AS s
LEFT JOIN annotation_consensuslabel c ON c.item_id = s.item_id AND c.attribute = s.attribute
WHERE c.id IS NULL OR c.yes <> s.yes OR c."no" <> s."no" OR c.maybe <> s.maybe
   OR c.rules_version <> %(version)s
"""


def _aggregate_range(campaign: Campaign, low: int, high: int) -> None:
    """Consensus for the campaign's normal items with ``low <= id < high`` that have judgments.

    Every kind but safety labels each attribute by its own majority (rules.majority_label):
    the database counts and leaves out what did not change, the rules label the rest.
    """
    if campaign.kind == Campaign.Kind.SAFETY:
        _aggregate_items(campaign, Q(item_id__gte=low, item_id__lt=high))
        return
    params = {"campaign": campaign.pk, "low": low, "high": high, "version": rules.RULES_VERSION}
    changed: dict[int, dict[str, rules.Label]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(_CHANGED_COUNTS, params)
        for item_id, attribute, raters, yes, no, maybe in cursor:
            counts = rules.Counts(yes=yes, no=no, maybe=maybe)
            raters = max(campaign.raters_per_item, raters, counts.total)
            if campaign.kind == Campaign.Kind.GROUNDEDNESS_REWRITE and attribute == rules.COMMON_KNOWLEDGE:
                changed[item_id][attribute] = rules.common_knowledge_label(counts, raters=raters)
            else:
                changed[item_id][attribute] = rules.majority_label(attribute, counts, raters=raters)
    _store_labels(changed)


def aggregate_item(*, item_id: int) -> None:
    """Recompute the consensus labels of one item (idempotent)."""
    item = Item.objects.select_related("campaign").get(pk=item_id)
    _aggregate_range(item.campaign, item_id, item_id + 1)


@transaction.atomic
def aggregation_request(*, campaign: Campaign, requested_by: Any) -> AggregationRun:
    """Queue consensus for a whole campaign on a worker; progress is kept on the run.

    A run already pending or running for the campaign is returned instead of a second one.
    """
    from annotation.tasks import aggregate_campaign_task

    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    active = AggregationRun.objects.filter(
        campaign=campaign, status__in=[AggregationRun.Status.PENDING, AggregationRun.Status.RUNNING]
    ).first()
    if active is not None:
        return active
    run = AggregationRun.objects.create(campaign=campaign, requested_by=requested_by)
    # If the broker cannot take it, the request leaves no run behind (a 503).
    queueing.enqueue(aggregate_campaign_task, run.pk, undo=AggregationRun.objects.filter(pk=run.pk).delete)
    return run


def aggregate_campaign(*, campaign: Campaign, run: AggregationRun | None = None, chunk: int = 20_000) -> int:
    """Consensus for every item of the campaign with judgments, in chunks of item ids.

    One GROUP BY per chunk over the judgments (through their (item, attribute, value) index);
    progress is written to ``run`` after each chunk. Returns the number of items labelled.
    """
    bounds = Item.objects.filter(campaign=campaign, kind=Item.Kind.NORMAL).order_by("id")
    first = bounds.values_list("id", flat=True).first()
    last = bounds.reverse().values_list("id", flat=True).first()
    if run is not None:
        run.status = AggregationRun.Status.RUNNING
        run.total = bounds.count()
        run.done = 0
        run.save(update_fields=["status", "total", "done"])
    if first is not None:
        for low in range(first, last + 1, chunk):
            _aggregate_range(campaign, low, low + chunk)
            if run is not None:
                run.done = bounds.filter(id__lt=low + chunk).count()
                run.save(update_fields=["done"])
    if run is not None:
        run.status = AggregationRun.Status.DONE
        run.done = run.total
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "done", "finished_at"])
    labelled = bounds.filter(judgment_count__gt=0).count()
    logger.info("campaign %s: consensus for %d items", campaign.name, labelled)
    return labelled


def aggregation_failed(*, run_id: int, error: str) -> None:
    """Mark a run whose task raised as failed with the cause, unless it ended meanwhile."""
    AggregationRun.objects.filter(
        pk=run_id, status__in=[AggregationRun.Status.PENDING, AggregationRun.Status.RUNNING]
    ).update(status=AggregationRun.Status.FAILED, error=error, finished_at=timezone.now())


def aggregation_run(*, run_id: int) -> AggregationRun:
    """Task body: run a queued aggregation; a finished run is left alone."""
    run = AggregationRun.objects.select_related("campaign").get(pk=run_id)
    if run.status == AggregationRun.Status.DONE:
        return run
    try:
        aggregate_campaign(campaign=run.campaign, run=run)
    except Exception as exc:
        AggregationRun.objects.filter(pk=run.pk).update(
            status=AggregationRun.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
        raise
    return run
