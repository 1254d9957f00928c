"""How far raters agree in a campaign (Krippendorff's alpha), and what each rater did: items rated,
gold accuracy, and the accuracy Dawid–Skene estimates for them (``campaign_rater_estimates``).

Alpha is computed per attribute over the normal items, nominal level, from value counts: one
row per item, one column per answer (yes, no, maybe), as one GROUP BY over the judgments gives
them. For SSI the values are those after the cascade (what consensus counts), so a specific or
interesting answer the cascade did not ask counts as "no" there too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import krippendorff
import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Count

from annotation import rules
from annotation.models import (
    Assignment,
    Campaign,
    Item,
    Judgment,
    RaterEstimate,
    RaterModelRun,
    WorkerQuality,
)
from annotation.questions import campaign_questions

COLUMNS: tuple[str, ...] = rules.VALUES  # yes, no, maybe: the columns of the value-count matrix


def alpha_from_counts(counts: Sequence[Sequence[int]]) -> float | None:
    """Nominal Krippendorff's alpha from per-item value counts (rows: items; columns: values).

    None when it cannot be computed: fewer than two items rated by two or more raters (only those
    items are pairable), or no variation at all (every answer the same: alpha is 0/0).
    """
    rows = [row for row in counts if sum(row) >= 2]
    if len(rows) < 2:
        return None
    matrix = np.array(rows, dtype=float)
    if np.count_nonzero(matrix.sum(axis=0)) < 2:
        return None
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = float(krippendorff.alpha(value_counts=matrix, level_of_measurement="nominal"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def campaign_alpha(*, campaign: Campaign) -> dict[str, float | None]:
    """Krippendorff's alpha of each attribute of ``campaign`` (its questions, in order), normal items only."""
    grouped = (
        Judgment.objects.filter(item__campaign=campaign, item__kind=Item.Kind.NORMAL)
        .values_list("item_id", "attribute", "value")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * len(COLUMNS)))
    for item_id, attribute, value, n in grouped:
        counts[attribute][item_id][COLUMNS.index(value)] += n
    attributes = [q.attribute for q in campaign_questions(campaign)]
    attributes += sorted(set(counts) - set(attributes))  # e.g. an objective taken off the campaign
    return {
        attribute: alpha_from_counts(list(counts[attribute].values())) if attribute in counts else None
        for attribute in attributes
    }


@dataclass(frozen=True)
class WorkerRecord:
    """One worker in a campaign: normal items rated, and their record on gold (check) items."""

    worker_id: int
    username: str
    rated: int
    gold_seen: int = 0
    gold_correct: int = 0
    blocked: bool = False
    quality_id: int | None = None

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


def campaign_workers(*, campaign: Campaign, limit: int = 200) -> tuple[list[WorkerRecord], int]:
    """The workers of ``campaign``, most items rated first (at most ``limit``), and how many there are.

    Three queries whatever the number of workers.
    """
    rated = dict(
        Assignment.objects.filter(
            item__campaign=campaign, item__kind=Item.Kind.NORMAL, state=Assignment.State.SUBMITTED
        )
        .values_list("worker_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    qualities = {q.worker_id: q for q in WorkerQuality.objects.filter(campaign=campaign)}
    everyone = set(rated) | set(qualities)
    ranked = sorted(everyone, key=lambda worker_id: (-rated.get(worker_id, 0), worker_id))[:limit]
    names: dict[int, Any] = dict(get_user_model().objects.filter(pk__in=ranked).values_list("pk", "username"))
    records = []
    for worker_id in ranked:
        quality = qualities.get(worker_id)
        records.append(
            WorkerRecord(
                worker_id=worker_id,
                username=names.get(worker_id, str(worker_id)),
                rated=rated.get(worker_id, 0),
                gold_seen=quality.gold_seen if quality else 0,
                gold_correct=quality.gold_correct if quality else 0,
                blocked=quality.blocked if quality else False,
                quality_id=quality.pk if quality else None,
            )
        )
    return records, len(everyone)


@dataclass(frozen=True)
class RaterEstimates:
    """The campaign's latest finished Dawid–Skene run (None: none yet), the attributes it fitted,
    and each worker's estimate per attribute; ``flagged`` names the raters the flag rule marked,
    with the attributes (``annotation.dawid_skene.flagged``)."""

    run: RaterModelRun | None
    attributes: list[str]
    by_worker: dict[int, dict[str, RaterEstimate]]
    flagged: list[tuple[str, list[str]]]

    def cells(self, worker_id: int) -> list[RaterEstimate | None]:
        """One worker's estimates in the order of ``attributes`` (None where they gave no answer)."""
        mine = self.by_worker.get(worker_id, {})
        return [mine.get(attribute) for attribute in self.attributes]


def campaign_rater_estimates(*, campaign: Campaign, workers: Sequence[int]) -> RaterEstimates:
    """The estimates of ``workers`` (those the page lists) and every flagged rater's, from the
    campaign's latest finished Dawid–Skene run. Three queries whatever the number of workers."""
    run = campaign.rater_model_runs.filter(status=RaterModelRun.Status.DONE).first()
    if run is None:
        return RaterEstimates(run=None, attributes=[], by_worker={}, flagged=[])
    attributes = sorted(run.iterations)
    by_worker: dict[int, dict[str, RaterEstimate]] = defaultdict(dict)
    for estimate in RaterEstimate.objects.filter(run=run, worker_id__in=list(workers)):
        by_worker[estimate.worker_id][estimate.attribute] = estimate
    flagged: dict[str, list[str]] = defaultdict(list)
    for username, attribute in (
        RaterEstimate.objects.filter(run=run, flagged=True)
        .order_by("worker__username", "attribute")
        .values_list("worker__username", "attribute")
    ):
        flagged[username].append(attribute)
    return RaterEstimates(
        run=run, attributes=attributes, by_worker=dict(by_worker), flagged=list(flagged.items())
    )
