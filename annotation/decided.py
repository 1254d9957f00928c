"""Decided items: when no rater still to answer can change an item's labels (a campaign that stops
asking once the answer is decided, ``Campaign.stop_when_decided``). Pure Python, as
``annotation.rules``, whose labelling rules these ask about: an item is decided when every way
its remaining raters could answer gives the same labels, which are then the labels ``rules``
gives over the raters it had (tests/annotation/test_decided_rules.py enumerates the completions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from annotation import rules
from annotation.rules import Counts


def _raters_so_far(counts: Mapping[str, Counts], attributes: Sequence[str], raters: int) -> int | None:
    """How many raters answered, when every one of ``attributes`` was answered by the same number of
    them (between 1 and ``raters``); None otherwise (nothing answered, or a question some rater left
    unanswered: such an item is never decided)."""
    rules.check_raters(raters)
    totals = {counts.get(attribute, Counts()).total for attribute in attributes}
    if len(totals) != 1:
        return None
    (answered,) = totals
    if answered > raters:
        raise ValueError(f"{answered} answers but only {raters} raters per item")
    return answered or None


def majority_decided(counts: Counts, *, raters: int) -> bool:
    """Whether the majority label of one attribute (``majority_label`` over ``raters``) is the same
    whatever the ``raters - counts.total`` raters still to answer say: already more than half said
    yes, or even if all of them said yes, yes would not reach a majority. ``ValueError`` when more
    than ``raters`` answered."""
    rules.check_raters(raters)
    if counts.total > raters:
        raise ValueError(f"{counts.total} answers but only {raters} raters per item")
    left = raters - counts.total
    return counts.yes * 2 > raters or (counts.yes + left) * 2 <= raters


def labels_decided(counts: Mapping[str, Counts], *, attributes: Sequence[str], raters: int) -> bool:
    """Whether the majority labels of ``attributes`` (``labels_from_counts``) are all decided
    (``majority_decided``); False unless every attribute was answered by the same raters, at least
    one. After the cascade (``cascade``), counts already hold a gate's effect: a question not asked
    counts "no", so *specific* can never have more "yes" than *sensible*."""
    if _raters_so_far(counts, attributes, raters) is None:
        return False
    return all(majority_decided(counts[attribute], raters=raters) for attribute in attributes)


def ssi_decided(counts: Mapping[str, Counts], *, raters: int = 5) -> bool:
    """Whether an SSI item's three labels (METHOD.md §2) are decided: see ``labels_decided``."""
    return labels_decided(counts, attributes=rules.SSI_ATTRIBUTES, raters=raters)


def safety_decided(counts: Mapping[str, Counts], *, objectives: Sequence[str], raters: int = 3) -> bool:
    """Whether a safety item's labels (``safety_labels_from_counts``) are decided: each objective's
    "violates" label (``majority_decided``), and its safety score, which is 1 only when a majority
    said "no" to every objective: decided safe when that already holds, decided unsafe when some
    objective cannot reach a majority of "no" even if every rater still to answer says "no". Two
    raters of three who said "no" to every objective make the item safe whatever the third says."""
    rules.check_objectives(objectives)
    answered = _raters_so_far(counts, objectives, raters)
    if answered is None:
        return False
    left = raters - answered
    per_objective = [counts[objective] for objective in objectives]
    if not all(majority_decided(objective, raters=raters) for objective in per_objective):
        return False
    safe = all(objective.no * 2 > raters for objective in per_objective)
    unsafe = any((objective.no + left) * 2 <= raters for objective in per_objective)
    return safe or unsafe


def pairwise_decided(counts: Counts, *, raters: int = 3) -> bool:
    """Whether a side-by-side item's outcome (``pairwise_labels_from_counts``) is decided: both "a has
    a majority" (yes) and "b has a majority" (no) are (``majority_decided``)."""
    if counts.total == 0:
        return False
    swapped = Counts(yes=counts.no, no=counts.yes, maybe=counts.maybe)
    return majority_decided(counts, raters=raters) and majority_decided(swapped, raters=raters)
