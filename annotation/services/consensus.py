"""Consensus: the labels of each item from its judgments, by the rules of ``annotation.rules``.

Only complete items are labelled: an item is complete when its judgments reached the campaign's
raters per item and each of those raters answered every question (``rules.answered_by_all``). In a
campaign that stops once the answer is decided (``Campaign.stop_when_decided``), a decided item is
complete from the judgments it had when decided (``Item.decided_at_raters``), and is labelled by
the same rules over the raters it had: the full panel's hard labels (``annotation.rules``, "Decided
items"), with counts and soft labels that say how many raters it had. An
incomplete item has no labels (any it had are deleted), so it is left out of the consensus export
and of every dataset until its last rater answers; ``annotation.selectors`` counts complete and
incomplete items for the campaign page, the export and dataset manifests.

An item's last judgment queues ``item_aggregate``; a whole campaign is recomputed on demand
(``aggregation_request`` queues ``aggregation_run``, whose progress the admin shows) and by
``campaign_aggregate`` directly (the ``aggregate`` command, judgment imports, dataset builds).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotation import decided, rules
from annotation.models import AggregationRun, Campaign, ConsensusLabel, Item, RaterModelRun, item_complete
from groundwork import queueing

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000


class _Labelling:
    """The labels ``item_labels`` gives, computed once per distinct item: an item's labels depend
    only on its counts and raters (and the campaign's kind and objectives, fixed for a run), so the
    items of a campaign share a few hundred labellings (an SSI attribute of 5 raters has 21 possible
    counts). ``table[n]`` is the n-th labelling; the frozen ``Label`` objects are shared by every
    item that has it, and nothing changes them."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.table: list[dict[str, rules.Label]] = []
        self._index: dict[tuple[int, str], int | None] = {}

    @cached_property
    def objectives(self) -> list[str]:
        """A safety campaign's objectives (read when the first item is labelled), or none."""
        if self.campaign.kind != Campaign.Kind.SAFETY:
            return []
        return list(self.campaign.objectives.values_list("slug", flat=True))

    def index(self, raters: int, counts: str) -> int | None:
        """The number in ``table`` of the labels of an item judged by ``raters`` whose counts are
        ``counts`` (as the counting query writes them, see ``_COUNTS_TEXT``); None when the item is
        incomplete (some question not answered by all its raters)."""
        key = (raters, counts)
        try:
            return self._index[key]
        except KeyError:
            pass
        answered: dict[str, rules.Counts] = {}
        at = 0
        while at < len(counts):
            colon = counts.index(":", at)
            yes, no, maybe, length = map(int, counts[at:colon].split())
            at = colon + 1 + length
            answered[counts[colon + 1 : at]] = rules.Counts(yes=yes, no=no, maybe=maybe)
        labels = item_labels(self.campaign, answered, raters=raters, objectives=self.objectives)
        number = None
        if labels is not None:
            number = len(self.table)
            self.table.append(labels)
        self._index[key] = number
        return number


_INSERT_LABELS = """
INSERT INTO annotation_consensuslabel
    (item_id, attribute, label, yes, "no", maybe, yes_fraction, rules_version, computed_at)
SELECT t.item_id, l.attribute, l.label, l.yes, l."no", l.maybe, l.yes_fraction, %(version)s, %(now)s
FROM unnest(%(item)s::bigint[], %(labelling)s::integer[]) AS t(item_id, labelling)
JOIN unnest(%(number)s::integer[], %(attribute)s::varchar[], %(label)s::smallint[], %(yes)s::smallint[],
            %(no)s::smallint[], %(maybe)s::smallint[], %(fraction)s::float8[])
     AS l(labelling, attribute, label, yes, "no", maybe, yes_fraction)
  ON l.labelling = t.labelling
ORDER BY t.item_id, l.attribute
"""

_UPSERT = """
ON CONFLICT (item_id, attribute) DO UPDATE SET
    label = excluded.label, yes = excluded.yes, "no" = excluded."no", maybe = excluded.maybe,
    yes_fraction = excluded.yes_fraction, rules_version = excluded.rules_version,
    computed_at = excluded.computed_at
"""


def _store_labels(labelling: _Labelling, items: dict[int, int], *, stored: bool) -> None:
    """Write the labels of ``items`` (item id -> its number in ``labelling.table``).

    On PostgreSQL one statement: the items and the labellings they use go as arrays, and the
    database joins them into label rows. A plain INSERT when none of the items had a label stored
    (``stored`` false: a first computation); should another process store one meanwhile (an item's
    last judgment queues its own consensus), the INSERT fails whole and is made again as the upsert
    that is used whenever some label was stored. Elsewhere (SQLite) the ORM's bulk upsert."""
    if not items:
        return
    if connection.vendor != "postgresql":
        ConsensusLabel.objects.bulk_create(
            [
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
                for item_id, number in items.items()
                for label in labelling.table[number].values()
            ],
            update_conflicts=True,
            unique_fields=["item", "attribute"],
            update_fields=["label", "yes", "no", "maybe", "yes_fraction", "rules_version", "computed_at"],
            batch_size=BATCH_SIZE,
        )
        return
    used = sorted(set(items.values()))
    rows = [(number, label) for number in used for label in labelling.table[number].values()]
    params = {
        # The two long arrays as literals: psycopg adapts a list element by element (a third of a
        # second for the 66,667 items of the aggregate benchmark).
        "item": "{" + ",".join(map(str, items)) + "}",
        "labelling": "{" + ",".join(map(str, items.values())) + "}",
        "number": [number for number, _ in rows],
        "attribute": [label.attribute for _, label in rows],
        "label": [label.label for _, label in rows],
        "yes": [label.yes for _, label in rows],
        "no": [label.no for _, label in rows],
        "maybe": [label.maybe for _, label in rows],
        "fraction": [label.yes_fraction for _, label in rows],
        "version": rules.RULES_VERSION,
        "now": timezone.now(),
    }
    with connection.cursor() as cursor:
        if not stored:
            try:
                with transaction.atomic():
                    cursor.execute(_INSERT_LABELS, params)
                return
            except IntegrityError:
                logger.info("labels stored meanwhile for items %d..%d: upserting", min(items), max(items))
        cursor.execute(_INSERT_LABELS + _UPSERT, params)


# The counts of the campaign's complete normal items in an id range (judgment_count reached the
# raters per item, or for a decided item the count it was decided at: incomplete items are not
# read), for the items where anything changed since their labels were stored (counts, rules
# version, a label missing). One row per such item: its id, ``raters`` (those who judged it),
# whether it has labels stored, and ``counts``, its counts in one string (``_COUNTS_TEXT``) that
# ``_Labelling`` labels once for every item with the same counts.
#
# ``counted`` is one GROUP BY over the judgments, through their (item, attribute, value) index (the
# item's judgment count taken with MAX(), not grouped by, so that the grouping follows the index);
# ``items`` puts each item's counts into one string, ``stored`` does the same with the stored
# labels of the range, and an item is read when the two differ. Both read their rows in (item,
# attribute) order, so both strings list the attributes in the same order; should a plan not
# keep that order, an unchanged item would only be labelled again, never a changed one left out:
# equal strings mean equal counts. The plans stream, one item after another, without a sort or
# a hash table, so that a first computation costs little more than the GROUP BY, and a
# recomputation of an unchanged campaign reads and writes nothing more. The whole item is labelled
# again, not only the rows that differ: a safety item's labels depend on each other.
#
# Safety's rule (METHOD.md §3) also needs, per item, the raters who said "no" to every objective:
# for a safety campaign a second GROUP BY, over each rater's judgments, counts them
# (``everyone_no``), and they are the counts of the item's ``safety`` and ``unsafe`` rows (yes:
# those raters, no: the others; the other way round for unsafe), compared with the stored labels
# like any other row. For the other kinds ``%(safety)s`` is false and that part reads nothing.
# Likewise a side-by-side item's ``b_better`` row is its ``a_better`` counts swapped
# (``%(pairwise)s``), so that its counts match the stored labels' and a lost ``b_better`` label is
# seen and the item labelled again.
_COUNTS = """
WITH everyone_no AS (
    SELECT r.item_id, MAX(r.raters) AS raters,
           COUNT(*) FILTER (WHERE r.other = 0) AS said_no, COUNT(*) FILTER (WHERE r.other > 0) AS other
    FROM (
        SELECT j.item_id, MAX(i.judgment_count) AS raters, COUNT(*) FILTER (WHERE j.value <> 'no') AS other
        FROM annotation_judgment j
        JOIN annotation_item i ON i.id = j.item_id
        WHERE %(safety)s AND i.campaign_id = %(campaign)s AND i.kind = 'normal'
          AND i.judgment_count >= COALESCE(i.decided_at_raters, %(raters)s)
          AND j.item_id >= %(low)s AND j.item_id < %(high)s
        GROUP BY j.item_id, j.assignment_id
    ) AS r
    GROUP BY r.item_id
),
counted AS (
    SELECT j.item_id, j.attribute, MAX(i.judgment_count) AS raters,
           COUNT(*) FILTER (WHERE j.value = 'yes') AS yes,
           COUNT(*) FILTER (WHERE j.value = 'no') AS "no",
           COUNT(*) FILTER (WHERE j.value = 'maybe') AS maybe
    FROM annotation_judgment j
    JOIN annotation_item i ON i.id = j.item_id
    WHERE i.campaign_id = %(campaign)s AND i.kind = 'normal'
      AND i.judgment_count >= COALESCE(i.decided_at_raters, %(raters)s)
      AND j.item_id >= %(low)s AND j.item_id < %(high)s
    GROUP BY j.item_id, j.attribute
    UNION ALL
    SELECT item_id, CAST(%(safe)s AS varchar(64)), raters, said_no, other, CAST(0 AS bigint)
    FROM everyone_no
    UNION ALL
    SELECT item_id, CAST(%(unsafe)s AS varchar(64)), raters, other, said_no, CAST(0 AS bigint)
    FROM everyone_no
    UNION ALL
    SELECT j.item_id, CAST(%(b_better)s AS varchar(64)), MAX(i.judgment_count),
           COUNT(*) FILTER (WHERE j.value = 'no'), COUNT(*) FILTER (WHERE j.value = 'yes'),
           COUNT(*) FILTER (WHERE j.value = 'maybe')
    FROM annotation_judgment j
    JOIN annotation_item i ON i.id = j.item_id
    WHERE %(pairwise)s AND j.attribute = %(a_better)s AND i.campaign_id = %(campaign)s
      AND i.kind = 'normal' AND i.judgment_count >= COALESCE(i.decided_at_raters, %(raters)s)
      AND j.item_id >= %(low)s AND j.item_id < %(high)s
    GROUP BY j.item_id
),
items AS (
    SELECT s.item_id, MAX(s.raters) AS raters, {counts} AS counts
    FROM (SELECT * FROM counted ORDER BY item_id, attribute) AS s
    GROUP BY s.item_id
),
stored AS (
    SELECT s.item_id, {counts} AS counts,
           COUNT(*) FILTER (WHERE s.rules_version <> %(version)s) AS outdated
    FROM (
        SELECT * FROM annotation_consensuslabel
        WHERE item_id >= %(low)s AND item_id < %(high)s
        ORDER BY item_id, attribute
    ) AS s
    GROUP BY s.item_id
)
SELECT t.item_id, t.raters, s.item_id IS NOT NULL, t.counts
FROM items t
LEFT JOIN stored s ON s.item_id = t.item_id
WHERE s.item_id IS NULL OR s.counts <> t.counts OR s.outdated > 0
ORDER BY t.item_id
"""
# An item's counts in one string, ``<yes> <no> <maybe> <length of the attribute>:<attribute>`` per
# attribute, which only the attribute's length delimits: unambiguous whatever the attribute is.
_COUNTS_TEXT = """{aggregate}(s.yes || ' ' || s."no" || ' ' || s.maybe || ' ' || LENGTH(s.attribute) || ':'
                             || s.attribute, '')"""
_COUNTS_AGGREGATE = {"postgresql": "string_agg", "sqlite": "group_concat"}

# Labels of the range's incomplete items: none should exist (labels stored by rules version 1,
# which labelled incomplete items, or an item whose judgments were deleted with their rater).
# One statement per range, driven by the items (their primary key), then the label index.
_DELETE_INCOMPLETE = """
DELETE FROM annotation_consensuslabel
WHERE item_id IN (
    SELECT id FROM annotation_item
    WHERE campaign_id = %(campaign)s AND kind = 'normal' AND id >= %(low)s AND id < %(high)s
      AND judgment_count < COALESCE(decided_at_raters, %(raters)s)
)
"""


def item_labels(
    campaign: Campaign, counts: dict[str, rules.Counts], *, raters: int, objectives: Sequence[str]
) -> dict[str, rules.Label] | None:
    """One item's labels from its counts, by the rule of its campaign's kind (``annotation.rules``):
    SSI and the evaluations by majority, safety from every objective and the raters who said "no"
    to all of them, the rewrite's common knowledge only when every rater says so, side by side's
    a or b by majority (a tie otherwise: ``rules.pairwise_labels_from_counts``). None when the item
    is not complete: some question was not answered by all ``raters`` of the item.

    The one place the rules are applied; ``_Labelling`` calls it once per distinct (counts, raters),
    so it must depend on nothing else (the campaign's kind and ``objectives`` are fixed for a run)."""
    if campaign.kind == Campaign.Kind.SSI:
        attributes: Sequence[str] = rules.SSI_ATTRIBUTES
    elif campaign.kind == Campaign.Kind.PAIRWISE:
        attributes = [rules.A_BETTER]
    elif campaign.kind == Campaign.Kind.SAFETY:
        everyone_no = counts.pop(rules.SAFETY_SCORE, rules.Counts())
        counts.pop(rules.UNSAFE, None)
        attributes = objectives
    else:
        attributes = list(counts)
    if not rules.answered_by_all(counts, attributes=attributes, raters=raters):
        return None
    if campaign.kind == Campaign.Kind.SSI:
        return rules.ssi_labels_from_counts(counts, raters=raters)
    if campaign.kind == Campaign.Kind.PAIRWISE:
        return rules.pairwise_labels_from_counts(counts[rules.A_BETTER], raters=raters)
    if campaign.kind == Campaign.Kind.SAFETY:
        return rules.safety_labels_from_counts(
            counts, objectives=objectives, raters=raters, all_no_raters=everyone_no.yes
        )
    labels = rules.labels_from_counts(counts, attributes=attributes, raters=raters)
    if campaign.kind == Campaign.Kind.GROUNDEDNESS_REWRITE and rules.COMMON_KNOWLEDGE in counts:
        labels[rules.COMMON_KNOWLEDGE] = rules.common_knowledge_label(
            counts[rules.COMMON_KNOWLEDGE], raters=raters
        )
    return labels


# Kinds whose campaigns may stop asking once an item's answer is decided (``item_decided``): those
# labelled by majority. Not the rewrite, whose researched rewrites are the work wanted from every
# rater, nor the human baseline, which has no judgments to decide.
DECIDABLE_KINDS = (
    Campaign.Kind.SSI,
    Campaign.Kind.SAFETY,
    Campaign.Kind.GROUNDEDNESS_EVAL,
    Campaign.Kind.HELPFULNESS,
    Campaign.Kind.PAIRWISE,
)


def item_decided(campaign: Campaign, counts: dict[str, rules.Counts], *, attributes: Sequence[str]) -> bool:
    """Whether an item of ``campaign`` with these counts (its raters' judgments so far, after the
    cascade) is decided: no rater still to answer can change any of its labels
    (``annotation.decided``). ``attributes``: the campaign's questions (a safety campaign's objectives).
    False for the kinds not in ``DECIDABLE_KINDS``, and for counts that do not fit the campaign (more
    judgments than its raters per item): the item then simply waits for every rater."""
    raters = campaign.raters_per_item
    try:
        if campaign.kind == Campaign.Kind.SSI:
            return decided.ssi_decided(counts, raters=raters)
        if campaign.kind == Campaign.Kind.SAFETY:
            return decided.safety_decided(counts, objectives=attributes, raters=raters)
        if campaign.kind == Campaign.Kind.PAIRWISE:
            return decided.pairwise_decided(counts.get(rules.A_BETTER, rules.Counts()), raters=raters)
        if campaign.kind in DECIDABLE_KINDS:
            return decided.labels_decided(counts, attributes=attributes, raters=raters)
    except ValueError as exc:
        logger.warning("campaign %s: an item was not decided: %s", campaign.name, exc)
    return False


def _aggregate_range(labelling: _Labelling, low: int, high: int) -> None:
    """Consensus for the campaign's normal items with ``low <= id < high``: the database counts the
    complete items and leaves out those where nothing changed, the rules label the rest (once per
    distinct counts, ``labelling``); incomplete items lose any labels they had."""
    campaign = labelling.campaign
    params = {
        "campaign": campaign.pk,
        "low": low,
        "high": high,
        "raters": campaign.raters_per_item,
        "version": rules.RULES_VERSION,
        "safety": campaign.kind == Campaign.Kind.SAFETY,
        "safe": rules.SAFETY_SCORE,
        "unsafe": rules.UNSAFE,
        "pairwise": campaign.kind == Campaign.Kind.PAIRWISE,
        "a_better": rules.A_BETTER,
        "b_better": rules.B_BETTER,
    }
    items: dict[int, int] = {}  # item id -> its labelling
    short: list[int] = []  # judged by enough raters, but some question not answered by all of them
    stored = False
    with connection.cursor() as cursor:
        cursor.execute(_DELETE_INCOMPLETE, params)
        counts_text = _COUNTS_TEXT.replace("{aggregate}", _COUNTS_AGGREGATE[connection.vendor])
        cursor.execute(_COUNTS.replace("{counts}", counts_text), params)
        for item_id, judged, labels_stored, counts in cursor:
            # Those who judged it: the campaign's raters per item (or more, where more judged it),
            # or for a decided item those it had (those it was decided at, or more: a rater who
            # held a lease then may still answer, and the labels stay the full panel's).
            number = labelling.index(judged, counts)
            if number is None:
                short.append(item_id)
            else:
                items[item_id] = number
                stored = stored or bool(labels_stored)
    if short:
        ConsensusLabel.objects.filter(item_id__in=short).delete()
    _store_labels(labelling, items, stored=stored)


def item_aggregate(*, item_id: int) -> None:
    """Recompute the consensus labels of one item (idempotent): labels when it is complete, none
    otherwise."""
    item = Item.objects.select_related("campaign").get(pk=item_id)
    _aggregate_range(_Labelling(item.campaign), item_id, item_id + 1)


@transaction.atomic
def aggregation_request(*, campaign: Campaign, requested_by: User | None) -> AggregationRun:
    """Queue consensus for a whole campaign on a worker; progress is kept on the run.

    A run already pending or running for the campaign is returned instead of a second one.
    """
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    active = AggregationRun.objects.filter(
        campaign=campaign, status__in=[AggregationRun.Status.PENDING, AggregationRun.Status.RUNNING]
    ).first()
    if active is not None:
        return active
    run = AggregationRun.objects.create(campaign=campaign, requested_by=requested_by)
    # If the broker cannot take it, the request leaves no run behind (a 503).
    queueing.enqueue(
        "annotation.tasks.aggregation_run_task", run.pk, undo=AggregationRun.objects.filter(pk=run.pk).delete
    )
    return run


def campaign_aggregate(*, campaign: Campaign, run: AggregationRun | None = None, chunk: int = 20_000) -> int:
    """Consensus for every complete item of the campaign, in chunks of item ids; incomplete items
    are left without labels (see the module docstring).

    One GROUP BY per chunk over the judgments (through their (item, attribute, value) index);
    progress is written to ``run`` after each chunk. Returns the number of complete items (all
    their raters judged them), which are the items labelled.
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
        labelling = _Labelling(campaign)
        for low in range(first, last + 1, chunk):
            _aggregate_range(labelling, low, low + chunk)
            if run is not None:
                run.done = bounds.filter(id__lt=low + chunk).count()
                run.save(update_fields=["done"])
    if run is not None:
        run.status = AggregationRun.Status.DONE
        run.done = run.total
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "done", "finished_at"])
    labelled = bounds.filter(item_complete(raters=campaign.raters_per_item)).count()
    logger.info("campaign %s: consensus for %d complete items", campaign.name, labelled)
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
    campaign_aggregate(campaign=run.campaign, run=run)  # a failure: the task marks the run failed
    return run


# --- labels that know their raters (annotation.services.rater_models, run by a worker) --------


@transaction.atomic
def rater_aggregation_request(*, campaign: Campaign, requested_by: User | None) -> RaterModelRun:
    """Queue a Dawid–Skene aggregation of the campaign beside its majority vote on a worker
    (``annotation.services.rater_models``); a run already pending or running is returned instead."""
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    active = RaterModelRun.objects.filter(
        campaign=campaign, status__in=[RaterModelRun.Status.PENDING, RaterModelRun.Status.RUNNING]
    ).first()
    if active is not None:
        return active
    run = RaterModelRun.objects.create(campaign=campaign, requested_by=requested_by)
    queueing.enqueue(
        "annotation.tasks.rater_aggregation_run_task",
        run.pk,
        undo=RaterModelRun.objects.filter(pk=run.pk).delete,
    )
    return run


def rater_aggregation_failed(*, run_id: int, error: str) -> None:
    """Mark a Dawid–Skene run whose task raised as failed with the cause, unless it ended meanwhile."""
    RaterModelRun.objects.filter(
        pk=run_id, status__in=[RaterModelRun.Status.PENDING, RaterModelRun.Status.RUNNING]
    ).update(status=RaterModelRun.Status.FAILED, error=error, finished_at=timezone.now())
