"""How far raters agree in a campaign (Krippendorff's alpha), and what each rater did.

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
from annotation.models import Assignment, Campaign, Item, Judgment, WorkerQuality
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
