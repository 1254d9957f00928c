"""Judgments made elsewhere, imported into a campaign all or nothing (the format:
``annotation.judgment_records``).

Items are found by key or created; a rater becomes an inactive user ``ext:<rater>`` that cannot
log in. Each (item, rater) becomes one submitted assignment, its answers go through the same rules
as a crowdworker's (every question the rating page asks must be answered; the cascade, METHOD.md §2),
and the campaign's consensus is recomputed: items whose raters have all answered get their labels,
the others stay incomplete (``annotation.services.consensus``). A bad line refuses the whole import
with its line and field; nothing is written.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone

from annotation import rules
from annotation.errors import AnnotationError, JudgmentImportError
from annotation.judgment_records import SAFETY_ATTRIBUTE, JudgmentRecord, parse_object
from annotation.models import Assignment, Campaign, Item, Judgment
from annotation.questions import campaign_questions, question_gates
from annotation.selectors import campaigns_completeness
from annotation.services.consensus import campaign_aggregate
from dialogs.services import import_limits
from groundwork.jsonl import ImportErrors, RecordError, parse_each_line, parse_each_object

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000
EXTERNAL_PREFIX = "ext:"


def parse_jsonl(lines: Iterable[str | bytes]) -> Iterator[JudgmentRecord | RecordError]:
    """Parse JSONL lines (blank lines skipped), yielding a record or the error of each line."""
    return parse_each_line(lines, parse_object, import_limits())


def parse_objects(objects: Iterable[Any]) -> Iterator[JudgmentRecord | RecordError]:
    """Check already-decoded judgment objects (an API body); "line" is the 1-based position."""
    return parse_each_object(objects, parse_object, import_limits())


@dataclass
class ImportResult:
    items_created: int = 0
    items_existing: int = 0  # items already in the campaign that got judgments
    raters_created: int = 0
    ratings: int = 0  # (item, rater) pairs, one submitted assignment each
    judgments: int = 0
    labelled: int = 0  # items of the campaign with consensus labels after the import (complete ones)
    incomplete: int = 0  # items of the campaign with fewer judgments than its raters: no labels


@dataclass
class _Rating:
    """One rater's answers about one item, gathered from the lines of the file."""

    line: int  # the first line of the pair
    answers: dict[str, tuple[str, int]] = field(default_factory=dict)  # attribute -> (value, line)


@transaction.atomic
def judgments_import(
    *, campaign: Campaign, lines: Iterable[JudgmentRecord | RecordError], source: str
) -> ImportResult:
    """Import judgments made elsewhere into ``campaign``, all or nothing, then recompute its consensus.

    ``lines`` are parsed lines (``parse_jsonl``, ``parse_objects``). Raises ``JudgmentImportError``
    with every problem found (up to ``MAX_REPORTED_ERRORS``), and writes nothing then: an unknown
    attribute or objective, the same (item, rater, attribute) twice, one key with two different
    items, a rating that leaves out a question the rating page would have asked (as strict as the
    page: every question, except those the cascade skips — SSI's specific after a sensible that is
    not "yes", the groundedness evaluation's well-known question after no external claims), more
    raters for an item than the campaign's raters per item, or a rater who already rated the item
    (so importing the same file twice is refused, not doubled).
    """
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)  # one import at a time
    gates = question_gates(campaign_questions(campaign))
    questions = [attribute for attribute, _ in gates]
    if not questions:
        raise AnnotationError(
            f"{campaign.get_kind_display()} campaigns ask no yes/no/maybe questions; there is nothing "
            "to import judgments into."
        )
    safety = campaign.kind == Campaign.Kind.SAFETY
    errors = ImportErrors(JudgmentImportError)
    items: dict[str, JudgmentRecord] = {}  # key -> its first line
    ratings: dict[tuple[str, str], _Rating] = {}  # (key, rater) -> answers
    for record in lines:
        if isinstance(record, RecordError):
            errors.add(record)
            continue
        attribute = _attribute(record, questions=questions, safety=safety, errors=errors)
        if attribute is None:
            continue
        first = items.setdefault(record.key, record)
        if (first.context, first.response) != (record.context, record.response):
            errors.add(
                RecordError(
                    record.line,
                    "item",
                    f"item {record.key!r} has another context or response on line {first.line}",
                )
            )
            continue
        rating = ratings.setdefault((record.key, record.rater), _Rating(line=record.line))
        if attribute in rating.answers:
            where = "objective" if safety else "attribute"
            errors.add(
                RecordError(
                    record.line,
                    where,
                    f"rater {record.rater!r} already answered {attribute!r} for item {record.key!r} "
                    f"on line {rating.answers[attribute][1]}",
                )
            )
            continue
        rating.answers[attribute] = (record.value, record.line)

    raters_by_key: dict[str, int] = defaultdict(int)
    for (key, rater), rating in ratings.items():
        raters_by_key[key] += 1
        _check_answered(rater, key, rating, gates=gates, safety=safety, errors=errors)
    for key, count in raters_by_key.items():
        if count > campaign.raters_per_item:
            errors.add(
                RecordError(
                    items[key].line,
                    "rater",
                    f"item {key!r} has {count} raters, over the campaign's {campaign.raters_per_item} "
                    "raters per item",
                )
            )

    existing = _existing_items(campaign, items, errors)
    users = _external_users({rater for _, rater in ratings})
    taken = _slots_taken(existing.values())
    done = set(
        Assignment.objects.filter(
            item_id__in=[item.pk for item in existing.values()], worker_id__in=[u.pk for u in users.values()]
        ).values_list("item_id", "worker_id")
    )
    for (key, rater), rating in ratings.items():
        item = existing.get(key)
        if item is None:
            continue
        user = users.get(rater)
        if user is not None and (item.pk, user.pk) in done:
            errors.add(
                RecordError(
                    rating.line,
                    "rater",
                    f"rater {rater!r} already has judgments for item {key!r} (imported before?)",
                )
            )
    for key, item in existing.items():
        if taken[item.pk] + raters_by_key[key] > campaign.raters_per_item:
            errors.add(
                RecordError(
                    items[key].line,
                    "rater",
                    f"item {key!r} already has {taken[item.pk]} of its {campaign.raters_per_item} raters; "
                    f"{raters_by_key[key]} more do not fit",
                )
            )
    errors.refuse_if_any()

    result = ImportResult(items_existing=len(existing), ratings=len(ratings))
    result.raters_created = _create_external_users(users, {rater for _, rater in ratings})
    _fill_existing_items(existing, raters_by_key)
    created = _create_items(campaign, {k: r for k, r in items.items() if k not in existing}, raters_by_key)
    result.items_created = len(created)
    result.judgments = _create_ratings(gates, ratings, {**existing, **created}, users)
    result.labelled = campaign_aggregate(campaign=campaign)
    result.incomplete = campaigns_completeness(campaigns=[campaign])[campaign.pk].incomplete
    logger.info(
        "campaign %s: imported %d ratings (%d judgments) from %s",
        campaign.name,
        result.ratings,
        result.judgments,
        source,
    )
    return result


def judgments_import_file(*, campaign: Campaign, path: Path, source: str | None = None) -> ImportResult:
    """Import a JSONL file of judgments (see the module docstring); all or nothing."""
    with path.open("rb") as stream:
        return judgments_import(campaign=campaign, lines=parse_jsonl(stream), source=source or path.name)


def _check_answered(
    rater: str,
    key: str,
    rating: _Rating,
    *,
    gates: tuple[tuple[str, str | None], ...],
    safety: bool,
    errors: ImportErrors,
) -> None:
    """Report the first question the rating page would have asked that ``rating`` leaves out: every
    question without a gate, and each gated one whose gate was answered "yes" (``rules.asked``). It is
    reported on the line of the gate's "yes" (or the rating's first line) with the field saying what
    is missing there."""
    given = {attribute: value for attribute, (value, _) in rating.answers.items()}
    asked = rules.asked(given, gates=gates)
    missing = next((attribute for attribute in asked if attribute not in given), None)
    if missing is None:
        return
    gate = dict(gates)[missing]
    if safety:
        message = (
            f"rater {rater!r} has no answer for objective {missing!r} of item {key!r}; "
            "a safety rating answers every objective of the campaign"
        )
        errors.add(RecordError(rating.line, "objective", message))
    elif gate is None:
        message = (
            f"rater {rater!r} has no {missing!r} answer for item {key!r}; every rating answers it, "
            "as on the rating page"
        )
        errors.add(RecordError(rating.line, "attribute", message))
    else:
        message = (
            f"rater {rater!r} answered {gate!r} yes for item {key!r} but has no {missing!r} answer; "
            f"the rating page asks {missing!r} after a yes"
        )
        errors.add(RecordError(rating.answers[gate][1], "attribute", message))


def _attribute(
    record: JudgmentRecord, *, questions: list[str], safety: bool, errors: ImportErrors
) -> str | None:
    """The attribute the record's judgment is stored under, or None after reporting an error."""
    if safety:
        if record.attribute != SAFETY_ATTRIBUTE:
            errors.add(
                RecordError(
                    record.line,
                    "attribute",
                    f"{record.attribute!r}: the lines of a safety campaign say {SAFETY_ATTRIBUTE!r} "
                    "and name an objective",
                )
            )
            return None
        if record.objective not in questions:
            shown = (
                "missing"
                if record.objective is None
                else f"{record.objective!r} is not an objective of this campaign"
            )
            errors.add(RecordError(record.line, "objective", f"{shown} (one of {', '.join(questions)})"))
            return None
        return record.objective
    if record.objective is not None:
        errors.add(RecordError(record.line, "objective", "objectives are for safety campaigns only"))
        return None
    if record.attribute not in questions:
        errors.add(
            RecordError(
                record.line,
                "attribute",
                f"{record.attribute!r} is not a question of this campaign (one of {', '.join(questions)})",
            )
        )
        return None
    return record.attribute


def _existing_items(
    campaign: Campaign, items: Mapping[str, JudgmentRecord], errors: ImportErrors
) -> dict[str, Item]:
    """The items of the file already in the campaign, locked; reports those that do not match."""
    found: dict[str, Item] = {}
    keys = list(items)
    for start in range(0, len(keys), BATCH_SIZE):
        chunk = keys[start : start + BATCH_SIZE]
        for item in Item.objects.select_for_update().filter(campaign=campaign, key__in=chunk).order_by("id"):
            record = items[item.key]
            if item.kind != Item.Kind.NORMAL:
                errors.add(
                    RecordError(
                        record.line,
                        "item.key",
                        f"item {item.key!r} is a {item.kind} item; "
                        "judgments are imported for normal items only",
                    )
                )
            elif (item.context, item.response) != (record.context_json(), record.response):
                errors.add(
                    RecordError(
                        record.line,
                        "item",
                        f"item {item.key!r} is already in the campaign with another context or response",
                    )
                )
            else:
                found[item.key] = item
    return found


def _slots_taken(items: Iterable[Item]) -> dict[int, int]:
    """Raters per item already holding a slot: submitted, or leased (until the lease is expired)."""
    taken: dict[int, int] = defaultdict(int)
    ids = [item.pk for item in items]
    held = Assignment.objects.filter(
        item_id__in=ids, state__in=[Assignment.State.LEASED, Assignment.State.SUBMITTED]
    ).values_list("item_id", flat=True)
    for item_id in held:
        taken[item_id] += 1
    return taken


def _external_users(raters: set[str]) -> dict[str, User]:
    """The users of these external raters that exist already, by rater id."""
    names = sorted(EXTERNAL_PREFIX + rater for rater in raters)
    user_model = get_user_model()
    found: dict[str, User] = {}
    for start in range(0, len(names), BATCH_SIZE):
        for user in user_model.objects.filter(username__in=names[start : start + BATCH_SIZE]):
            found[user.username.removeprefix(EXTERNAL_PREFIX)] = user
    return found


def _create_external_users(users: dict[str, User], raters: set[str]) -> int:
    """Add a user for each new rater to ``users``: inactive, no password, no role."""
    user_model = get_user_model()
    new = [
        user_model(username=EXTERNAL_PREFIX + rater, is_active=False, password=make_password(None))
        for rater in sorted(raters - set(users))
    ]
    for user in user_model.objects.bulk_create(new, batch_size=BATCH_SIZE):
        users[user.username.removeprefix(EXTERNAL_PREFIX)] = user
    return len(new)


def _fill_existing_items(existing: Mapping[str, Item], raters_by_key: Mapping[str, int]) -> None:
    """Imported ratings take slots of items already in the campaign (locked by ``_existing_items``)."""
    for item in existing.values():
        item.judgment_count += raters_by_key[item.key]
        item.open_slots = max(item.open_slots - raters_by_key[item.key], 0)
    Item.objects.bulk_update(list(existing.values()), ["judgment_count", "open_slots"], batch_size=BATCH_SIZE)


def _create_items(
    campaign: Campaign, items: Mapping[str, JudgmentRecord], raters_by_key: Mapping[str, int]
) -> dict[str, Item]:
    """The new items, by key: no open slots, since they are not handed out to crowdworkers."""
    new = [
        Item(
            campaign=campaign,
            key=key,
            context=record.context_json(),
            response=record.response,
            open_slots=0,
            judgment_count=raters_by_key[key],
        )
        for key, record in items.items()
    ]
    return {item.key: item for item in Item.objects.bulk_create(new, batch_size=BATCH_SIZE)}


def _create_ratings(
    gates: tuple[tuple[str, str | None], ...],
    ratings: Mapping[tuple[str, str], _Rating],
    items: Mapping[str, Item],
    users: Mapping[str, User],
) -> int:
    """One submitted assignment per (item, rater) and its judgments; returns the judgment count."""
    now = timezone.now()
    pairs = list(ratings.items())
    created = 0
    for start in range(0, len(pairs), BATCH_SIZE):
        chunk = pairs[start : start + BATCH_SIZE]
        assignments = Assignment.objects.bulk_create(
            [
                Assignment(
                    item=items[key],
                    worker=users[rater],
                    state=Assignment.State.SUBMITTED,
                    expires_at=now,
                    submitted_at=now,
                    submission={attribute: value for attribute, (value, _) in rating.answers.items()},
                )
                for (key, rater), rating in chunk
            ]
        )
        judgments = [
            Judgment(
                assignment=assignment, item=assignment.item, attribute=attribute, value=value, raw_value=raw
            )
            for assignment, (_, rating) in zip(assignments, chunk, strict=True)
            for attribute, (value, raw) in _values(gates, rating).items()
        ]
        Judgment.objects.bulk_create(judgments, batch_size=BATCH_SIZE)
        created += len(judgments)
    return created


def _values(gates: tuple[tuple[str, str | None], ...], rating: _Rating) -> dict[str, tuple[str, str]]:
    """attribute → (value counted, value given or "") for one rating, after the cascade: a question
    the cascade does not ask counts "no" whatever was given (every asked one was checked present)."""
    given = {attribute: value for attribute, (value, _) in rating.answers.items()}
    cascaded = rules.cascade(given, gates=gates)
    return {attribute: (cascaded[attribute], given.get(attribute, "")) for attribute, _ in gates}
