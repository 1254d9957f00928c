"""Consensus: the labels of each item from its judgments, by the rules of ``annotation.rules``.

Only complete items are labelled: an item is complete when its judgments reached the campaign's
raters per item and each of those raters answered every question (``rules.answered_by_all``). An
incomplete item has no labels (any it had are deleted), so it is left out of the consensus export
and of every dataset until its last rater answers; ``annotation.selectors`` counts complete and
incomplete items for the campaign page, the export and dataset manifests.

An item's last judgment queues ``item_aggregate``; a whole campaign is recomputed on demand
(``aggregation_request`` queues ``aggregation_run``, whose progress the admin shows) and by
``campaign_aggregate`` directly (the ``aggregate`` command, judgment imports, dataset builds).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.db import connection, transaction
from django.utils import timezone

from annotation import rules
from annotation.models import AggregationRun, Campaign, ConsensusLabel, Item
from groundwork import queueing

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000


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


# The counts of every (item, attribute) of the campaign's complete normal items in an id range
# (judgment_count reached the raters per item: incomplete items are not read), for the
# items where anything changed since their labels were stored (counts, rules version, a label
# missing): one GROUP BY over the judgments (through their (item, attribute, value) index), the
# stored labels of the same range beside them, and the counts again for the items that differ. A
# recomputation of an unchanged campaign reads and writes nothing more. The whole item is labelled
# again, not only the rows that differ: a safety item's labels depend on each other.
#
# Safety's rule (METHOD.md §3) also needs, per item, the raters who said "no" to every objective:
# for a safety campaign a second GROUP BY, over each rater's judgments, counts them
# (``everyone_no``), and they are the counts of the item's ``safety`` and ``unsafe`` rows (yes:
# those raters, no: the others; the other way round for unsafe), compared with the stored labels
# like any other row. For the other kinds ``%(safety)s`` is false and that part reads nothing.
# Likewise a side-by-side item's ``b_better`` row is its ``a_better`` counts swapped (``compared``,
# ``%(pairwise)s``), so that a lost ``b_better`` label is seen and the item labelled again.
# ``raters``: those who judged the item.
_COUNTS = """
WITH everyone_no AS (
    SELECT r.item_id, r.raters,
           COUNT(*) FILTER (WHERE r.other = 0) AS said_no, COUNT(*) FILTER (WHERE r.other > 0) AS other
    FROM (
        SELECT j.item_id, i.judgment_count AS raters, COUNT(*) FILTER (WHERE j.value <> 'no') AS other
        FROM annotation_judgment j
        JOIN annotation_item i ON i.id = j.item_id
        WHERE %(safety)s AND i.campaign_id = %(campaign)s AND i.kind = 'normal'
          AND i.judgment_count >= %(raters)s AND j.item_id >= %(low)s AND j.item_id < %(high)s
        GROUP BY j.item_id, i.judgment_count, j.assignment_id
    ) AS r
    GROUP BY r.item_id, r.raters
),
counted AS (
    SELECT j.item_id, j.attribute, i.judgment_count AS raters,
           COUNT(*) FILTER (WHERE j.value = 'yes') AS yes,
           COUNT(*) FILTER (WHERE j.value = 'no') AS "no",
           COUNT(*) FILTER (WHERE j.value = 'maybe') AS maybe
    FROM annotation_judgment j
    JOIN annotation_item i ON i.id = j.item_id
    WHERE i.campaign_id = %(campaign)s AND i.kind = 'normal' AND i.judgment_count >= %(raters)s
      AND j.item_id >= %(low)s AND j.item_id < %(high)s
    GROUP BY j.item_id, j.attribute, i.judgment_count
    UNION ALL
    SELECT item_id, %(safe)s, raters, said_no, other, 0 FROM everyone_no
    UNION ALL
    SELECT item_id, %(unsafe)s, raters, other, said_no, 0 FROM everyone_no
),
compared AS (
    SELECT item_id, attribute, yes, "no", maybe FROM counted
    UNION ALL
    SELECT item_id, %(b_better)s, "no", yes, maybe FROM counted
    WHERE %(pairwise)s AND attribute = %(a_better)s
),
changed AS (
    SELECT s.item_id
    FROM compared s
    LEFT JOIN annotation_consensuslabel c
        ON c.item_id = s.item_id AND c.attribute = s.attribute
       AND c.item_id >= %(low)s AND c.item_id < %(high)s
    WHERE c.id IS NULL OR c.yes <> s.yes OR c."no" <> s."no" OR c.maybe <> s.maybe
       OR c.rules_version <> %(version)s
)
SELECT s.item_id, s.attribute, s.raters, s.yes, s."no", s.maybe
FROM counted s
WHERE s.item_id IN (SELECT item_id FROM changed)
"""

# Labels of the range's incomplete items: none should exist (labels stored by rules version 1,
# which labelled incomplete items, or an item whose judgments were deleted with their rater).
# One statement per range, driven by the items (their primary key), then the label index.
_DELETE_INCOMPLETE = """
DELETE FROM annotation_consensuslabel
WHERE item_id IN (
    SELECT id FROM annotation_item
    WHERE campaign_id = %(campaign)s AND kind = 'normal' AND id >= %(low)s AND id < %(high)s
      AND judgment_count < %(raters)s
)
"""


def _item_labels(
    campaign: Campaign, counts: dict[str, rules.Counts], *, raters: int, objectives: Sequence[str]
) -> dict[str, rules.Label] | None:
    """One item's labels from its counts, by the rule of its campaign's kind (``annotation.rules``):
    SSI and the evaluations by majority, safety from every objective and the raters who said "no"
    to all of them, the rewrite's common knowledge only when every rater says so, side by side's
    a or b by majority (a tie otherwise: ``rules.pairwise_labels_from_counts``). None when the item
    is not complete: some question was not answered by all ``raters`` of the item."""
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


def _aggregate_range(campaign: Campaign, low: int, high: int) -> None:
    """Consensus for the campaign's normal items with ``low <= id < high``: the database counts the
    complete items and leaves out those where nothing changed, the rules label the rest; incomplete
    items lose any labels they had."""
    safety = campaign.kind == Campaign.Kind.SAFETY
    params = {
        "campaign": campaign.pk,
        "low": low,
        "high": high,
        "raters": campaign.raters_per_item,
        "version": rules.RULES_VERSION,
        "safety": safety,
        "safe": rules.SAFETY_SCORE,
        "unsafe": rules.UNSAFE,
        "pairwise": campaign.kind == Campaign.Kind.PAIRWISE,
        "a_better": rules.A_BETTER,
        "b_better": rules.B_BETTER,
    }
    counts: dict[int, dict[str, rules.Counts]] = defaultdict(dict)
    judged: dict[int, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(_DELETE_INCOMPLETE, params)
        cursor.execute(_COUNTS, params)
        for item_id, attribute, raters, yes, no, maybe in cursor:
            counts[item_id][attribute] = rules.Counts(yes=yes, no=no, maybe=maybe)
            judged[item_id] = raters
    if not counts:
        return
    objectives = list(campaign.objectives.values_list("slug", flat=True)) if safety else []
    labels: dict[int, dict[str, rules.Label]] = {}
    short: list[int] = []  # judged by enough raters, but some question not answered by all of them
    for item_id, answered in counts.items():
        # The campaign's raters per item, or more where more judged it.
        raters = max(campaign.raters_per_item, judged[item_id])
        item_labels = _item_labels(campaign, answered, raters=raters, objectives=objectives)
        if item_labels is None:
            short.append(item_id)
        else:
            labels[item_id] = item_labels
    if short:
        ConsensusLabel.objects.filter(item_id__in=short).delete()
    _store_labels(labels)


def item_aggregate(*, item_id: int) -> None:
    """Recompute the consensus labels of one item (idempotent): labels when it is complete, none
    otherwise."""
    item = Item.objects.select_related("campaign").get(pk=item_id)
    _aggregate_range(item.campaign, item_id, item_id + 1)


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
    labelled = bounds.filter(judgment_count__gte=campaign.raters_per_item).count()
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
