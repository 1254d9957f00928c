"""Labels that know their raters: a campaign aggregated by Dawid–Skene (``annotation.dawid_skene``)
beside its majority vote, in a Celery worker.

``consensus.rater_aggregation_request`` queues a ``RaterModelRun``; ``rater_aggregation_run`` (the
task's body) calls ``campaign_rater_aggregate``, which

1. recomputes the majority labels (``consensus.campaign_aggregate``: nothing is written where
   nothing changed), so that both aggregations are of the same judgments;
2. reads the judgments of the campaign's complete normal items (those with majority labels), one
   range of item ids at a time;
3. fits Dawid–Skene per question, on "did the rater say yes?" (for side by side, ``b_better`` is
   fitted on "did the rater choose b?"); a safety item's ``safety`` posterior is the probability
   that it is clear of every objective, the product over objectives of P(clear), each fitted on
   "did the rater say no?", and ``unsafe`` its complement, as the majority's safety label is 1
   only when every objective has a majority of "no";
4. replaces the campaign's ``RaterAwareLabel`` rows and stores each rater's ``RaterEstimate`` per
   attribute (accuracy, confusion matrix, flag), and per attribute the agreement of the two labels.

This module is imported by the worker only (``annotation.tasks``): ``annotation.dawid_skene``
loads crowd-kit, scikit-learn, scipy and pandas.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from annotation import dawid_skene, rules
from annotation.models import Campaign, Item, RaterAwareLabel, RaterEstimate, RaterModelRun
from annotation.services import consensus

logger = logging.getLogger(__name__)

CHUNK = 50_000  # item ids per read

_JUDGMENTS = """
SELECT j.item_id, a.worker_id, j.attribute, CASE j.value WHEN 'yes' THEN 1 WHEN 'no' THEN 0 ELSE 2 END
FROM annotation_judgment j
JOIN annotation_item i ON i.id = j.item_id
JOIN annotation_assignment a ON a.id = j.assignment_id
WHERE i.campaign_id = %(campaign)s AND i.kind = 'normal'
  AND i.judgment_count >= COALESCE(i.decided_at_raters, %(raters)s)
  AND j.item_id >= %(low)s AND j.item_id < %(high)s
"""
_YES, _NO = 1, 0

_INSERT = """
INSERT INTO annotation_raterawarelabel (item_id, attribute, label, probability)
SELECT t.item_id, %(attribute)s, t.label, t.probability
FROM unnest(%(item)s::bigint[], %(label)s::smallint[], %(probability)s::float8[])
     AS t(item_id, label, probability)
"""

_AGREEMENT = """
SELECT r.attribute, COUNT(*), COUNT(*) FILTER (WHERE r.label = c.label)
FROM annotation_raterawarelabel r
JOIN annotation_consensuslabel c ON c.item_id = r.item_id AND c.attribute = r.attribute
JOIN annotation_item i ON i.id = r.item_id
WHERE i.campaign_id = %s
GROUP BY r.attribute
"""


@dataclass
class _Judgments:
    """A campaign's judgments as arrays: item id, worker id, attribute (its number in
    ``attributes``), value (1 yes, 0 no, 2 maybe)."""

    items: list[np.ndarray] = field(default_factory=list)
    workers: list[np.ndarray] = field(default_factory=list)
    codes: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    attributes: dict[str, int] = field(default_factory=dict)

    def add(self, rows: list[tuple[int, int, str, int]]) -> None:
        if not rows:
            return
        items, workers, attributes, values = zip(*rows, strict=True)
        code = self.attributes
        self.items.append(np.fromiter(items, np.int64, len(rows)))
        self.workers.append(np.fromiter(workers, np.int64, len(rows)))
        self.codes.append(
            np.fromiter((code.setdefault(a, len(code)) for a in attributes), np.int16, len(rows))
        )
        self.values.append(np.fromiter(values, np.int8, len(rows)))

    def answers(self, attribute: str, positive: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, workers, answers) of one attribute, an answer 1 where the value is ``positive``."""
        if attribute not in self.attributes or not self.items:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.int8)
        codes = np.concatenate(self.codes)
        keep = codes == self.attributes[attribute]
        values = np.concatenate(self.values)[keep]
        return (
            np.concatenate(self.items)[keep],
            np.concatenate(self.workers)[keep],
            (values == positive).astype(np.int8),
        )

    @property
    def count(self) -> int:
        return sum(len(chunk) for chunk in self.items)


_CLEAR = ":no"  # a safety objective's second question: is the response clear of it ("no")?


def _questions(campaign: Campaign, judgments: _Judgments) -> list[tuple[str, str, int]]:
    """What is fitted: (label attribute, judgment attribute, the value that counts as 1). A safety
    objective is fitted twice, as the majority reads it twice: violated when most say "yes", clear
    of it when most say "no" (a "maybe" is neither); ``<slug>:no`` is the second, which gives the
    safety label and is not stored as a label of its own."""
    if campaign.kind == Campaign.Kind.PAIRWISE:
        return [(rules.A_BETTER, rules.A_BETTER, _YES), (rules.B_BETTER, rules.A_BETTER, _NO)]
    if campaign.kind == Campaign.Kind.SAFETY:
        slugs = list(campaign.objectives.order_by("slug").values_list("slug", flat=True))
        return [(slug, slug, _YES) for slug in slugs] + [(slug + _CLEAR, slug, _NO) for slug in slugs]
    return [(attribute, attribute, _YES) for attribute in sorted(judgments.attributes)]


def _step(run: RaterModelRun | None, stage: str, done: int | None = None) -> None:
    if run is None:
        return
    run.stage = stage
    if done is not None:
        run.done = done
    run.save(update_fields=["stage", "done"])


def _store(
    campaign: Campaign,
    fits: dict[str, dawid_skene.AttributeFit],
    safety: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Replace the campaign's rater-aware labels with these (one transaction: readers see the old
    labels or the new ones)."""
    labels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = [
        (attribute, fit.items, fit.labels, fit.probability)
        for attribute, fit in fits.items()
        if not attribute.endswith(_CLEAR)
    ]
    if safety is not None:
        items, p_safe = safety
        labels.append((rules.SAFETY_SCORE, items, (p_safe > 0.5).astype(np.int8), p_safe))
        labels.append((rules.UNSAFE, items, (p_safe <= 0.5).astype(np.int8), 1.0 - p_safe))
    RaterAwareLabel.objects.filter(item__campaign=campaign).delete()
    if connection.vendor != "postgresql":
        RaterAwareLabel.objects.bulk_create(
            [
                RaterAwareLabel(item_id=int(i), attribute=attribute, label=int(h), probability=float(p))
                for attribute, items, hard, soft in labels
                for i, h, p in zip(items, hard, soft, strict=True)
            ],
            batch_size=2000,
        )
        return
    with connection.cursor() as cursor:
        for attribute, items, hard, soft in labels:
            cursor.execute(
                _INSERT,
                {
                    "attribute": attribute,
                    # Literals: psycopg adapts a list element by element.
                    "item": "{" + ",".join(map(str, items.tolist())) + "}",
                    "label": "{" + ",".join(map(str, hard.tolist())) + "}",
                    "probability": "{" + ",".join(map(repr, np.clip(soft, 0.0, 1.0).tolist())) + "}",
                },
            )


def _safety(fits: dict[str, dawid_skene.AttributeFit]) -> tuple[np.ndarray, np.ndarray] | None:
    """P(safe) of the items every objective was fitted for: the product over objectives of the
    probability that the response is clear of it (``_CLEAR``), as the majority's safety label is 1
    only when every objective has a majority of "no"."""
    clear = [fit for attribute, fit in fits.items() if attribute.endswith(_CLEAR)]
    if not clear:
        return None
    items = clear[0].items
    for fit in clear[1:]:
        items = np.intersect1d(items, fit.items)
    p_safe = np.ones(len(items))
    for fit in clear:
        p_safe *= fit.probability[np.searchsorted(fit.items, items)]
    return items, p_safe


def campaign_rater_aggregate(*, campaign: Campaign, run: RaterModelRun | None = None) -> RaterModelRun:
    """Aggregate ``campaign`` with Dawid–Skene (the module docstring); returns the run, done, with
    ``judgments`` read, ``items`` labelled, ``agreement`` and ``iterations`` per attribute. Without
    ``run`` a new one is recorded (the ``aggregate --rater-model`` command, the benchmark)."""
    if run is None:
        run = RaterModelRun.objects.create(campaign=campaign)
    consensus.campaign_aggregate(campaign=campaign)
    bounds = Item.objects.filter(campaign=campaign, kind=Item.Kind.NORMAL).order_by("id")
    first = bounds.values_list("id", flat=True).first()
    last = bounds.reverse().values_list("id", flat=True).first()
    ranges = list(range(first, last + 1, CHUNK)) if first is not None else []
    run.status = RaterModelRun.Status.RUNNING
    run.total = len(ranges) + 2  # each range read, fitting, storing
    run.done = 0
    run.save(update_fields=["status", "total", "done"])

    judgments = _Judgments()
    with connection.cursor() as cursor:
        for done, low in enumerate(ranges):
            _step(run, f"reading judgments: items {done * CHUNK:,}…", done)
            params = {
                "campaign": campaign.pk,
                "raters": campaign.raters_per_item,
                "low": low,
                "high": low + CHUNK,
            }
            cursor.execute(_JUDGMENTS, params)
            judgments.add(cursor.fetchall())
    questions = _questions(campaign, judgments)
    run.total += len(questions) - 1
    fits: dict[str, dawid_skene.AttributeFit] = {}
    for number, (attribute, source, positive) in enumerate(questions):
        _step(run, f"fitting {attribute}", len(ranges) + number)
        fits[attribute] = dawid_skene.fit(*judgments.answers(source, positive))
    _step(run, "storing labels and rater estimates", len(ranges) + len(questions))
    safety = _safety(fits) if campaign.kind == Campaign.Kind.SAFETY else None
    with transaction.atomic():
        _store(campaign, fits, safety)
        _store_estimates(run, fits)
        with connection.cursor() as cursor:
            cursor.execute(_AGREEMENT, [campaign.pk])
            run.agreement = {attribute: agree / total for attribute, total, agree in cursor.fetchall()}
        run.iterations = {
            attribute: fit.iterations for attribute, fit in fits.items() if not attribute.endswith(_CLEAR)
        }
        run.judgments = judgments.count
        run.items = len(np.unique(np.concatenate(judgments.items))) if judgments.items else 0
        run.status = RaterModelRun.Status.DONE
        run.stage = ""
        run.done = run.total
        run.finished_at = timezone.now()
        run.save()
    logger.info(
        "campaign %s: Dawid–Skene over %d judgments of %d items; agreement with the majority %s",
        campaign.name,
        run.judgments,
        run.items,
        run.agreement,
    )
    return run


def _store_estimates(run: RaterModelRun, fits: dict[str, dawid_skene.AttributeFit]) -> None:
    estimates = []
    for attribute, fit in fits.items():
        if attribute.endswith(_CLEAR):
            continue  # the raters of a safety objective are estimated on its "violates" question
        flagged = dawid_skene.flagged(fit.raters)
        estimates += [
            RaterEstimate(
                run=run,
                worker_id=worker,
                attribute=attribute,
                answers=rater.answers,
                accuracy=rater.accuracy,
                confusion=[list(row) for row in rater.confusion],
                flagged=worker in flagged,
            )
            for worker, rater in fits[attribute].raters.items()
        ]
    RaterEstimate.objects.bulk_create(estimates, batch_size=2000)


def rater_aggregation_run(*, run_id: int) -> RaterModelRun:
    """Task body: run a queued Dawid–Skene aggregation; a finished run is left alone."""
    with transaction.atomic():
        run = RaterModelRun.objects.select_for_update().select_related("campaign").get(pk=run_id)
        if run.status == RaterModelRun.Status.DONE:
            return run
        run.estimates.all().delete()  # a run re-delivered after its worker died starts again
    return campaign_rater_aggregate(campaign=run.campaign, run=run)  # a failure: the task marks it failed
