"""Part 3 of the annotation benchmark, aggregate: ``consensus.campaign_aggregate`` over 1M
judgments (every item fully rated: 5 raters x 3 SSI attributes) against a bare GROUP BY over the
same rows, twice:

- the first computation: no label stored yet, every label written (goal ≤ 3x); each run starts
  from a campaign with no labels (deleted, the table vacuumed, a checkpoint), best of ``runs``;
- the recomputation of the labelled campaign, nothing changed since (goal ≤ 2x), best of ``runs``.
"""

from __future__ import annotations

import gc
import re
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.db import connection

from annotation.models import Campaign, ConsensusLabel
from annotation.services import consensus
from bench import sqldata
from bench.annotation_common import (
    RATERS,
    TABLES,
    OthersMeter,
    bench_campaign,
    machine_load,
    timed,
)
from bench.report import Metric, say

BARE_GROUP_BY = """
    SELECT j.item_id, j.attribute, j.value, count(*)
    FROM annotation_judgment j JOIN annotation_item i ON i.id = j.item_id
    WHERE i.campaign_id = %s
    GROUP BY 1, 2, 3
"""


class SqlTimer:
    """A Django execute wrapper adding up the seconds spent in the database driver, by statement
    (SELECT, INSERT…; a ``WITH`` query by what its main statement does)."""

    def __init__(self) -> None:
        self.by_statement: dict[str, float] = defaultdict(float)
        self.queries = 0

    @property
    def seconds(self) -> float:
        return sum(self.by_statement.values())

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statement = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
            if statement == "WITH":  # a read, unless its main statement writes
                writes = re.search(r"\b(INSERT|UPDATE|DELETE)\b", sql.upper())
                statement = writes.group(1) if writes else "SELECT"
            self.by_statement[statement] += time.perf_counter() - started
            self.queries += 1


def _best_of(runs: int, action: Callable[[], Any]) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times), times


def _delete_labels(campaign: Campaign) -> None:
    """No label of the campaign left, and the label table vacuumed and checkpointed, so that the
    next computation is a first one and meets no dead rows, autovacuum or checkpoint."""
    sqldata.execute(
        """DELETE FROM annotation_consensuslabel c USING annotation_item i
           WHERE i.id = c.item_id AND i.campaign_id = %s""",
        [campaign.pk],
    )
    sqldata.vacuum_analyze("annotation_consensuslabel")


class _Aggregations:
    """Runs of ``campaign_aggregate`` with the seconds each spent in the database driver."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.timers: list[SqlTimer] = []
        self.labelled: list[int] = []

    def __call__(self) -> None:
        timer = SqlTimer()
        with connection.execute_wrapper(timer):
            self.labelled.append(consensus.campaign_aggregate(campaign=self.campaign))
        self.timers.append(timer)

    def report(self, label: str, best_s: float, runs: list[float]) -> SqlTimer:
        """Says the runs and where the best one spent its time; returns that run's timer."""
        best = self.timers[runs.index(best_s)]
        say(f"  {label}: {', '.join(f'{t:.2f}' for t in runs)} s ({self.labelled[-1]:,} items labelled)")
        in_driver = ", ".join(
            f"{statement} {seconds:.2f} s" for statement, seconds in best.by_statement.items()
        )
        say(
            f"    best run: {best.queries} queries; in the database driver {best.seconds:.2f} s "
            f"({in_driver}); in Python {best_s - best.seconds:.2f} s"
        )
        return best

    def check(self, items: int) -> None:
        labels = ConsensusLabel.objects.filter(item__campaign=self.campaign).count()
        if self.labelled[-1] != items or labels != items * 3:
            raise RuntimeError(f"campaign_aggregate labelled {self.labelled[-1]} items, {labels} labels")


def bench_aggregate(judgments: int = 1_000_000, runs: int = 3) -> list[Metric]:
    items = -(-judgments // (RATERS * 3))  # 66,667 for 1M
    say(f"aggregate: {items:,} SSI items x {RATERS} raters x 3 attributes, every item fully rated")
    campaign = bench_campaign("bench aggregate", status=Campaign.Status.CLOSED)
    with timed(f"{items:,} items inserted"):
        sqldata.insert_items(campaign.pk, items, open_slots=0, judgment_count=RATERS)
    workers = sqldata.create_users("bench-aggregate-", RATERS)
    with timed("assignments and judgments inserted"):
        assignments, judgments = sqldata.rate_every_item(campaign.pk, workers)
    say(f"  {assignments:,} assignments, {judgments:,} judgments")
    with timed("VACUUM ANALYZE"):
        sqldata.vacuum_analyze(*TABLES)

    rows: list[Any] = []

    def bare() -> None:
        with connection.cursor() as cursor:
            cursor.execute(BARE_GROUP_BY, [campaign.pk])
            rows[:] = cursor.fetchall()

    say(f"  {machine_load()}")
    with OthersMeter() as others:
        bare_s, bare_runs = _best_of(runs, bare)
    say(f"  bare GROUP BY: {', '.join(f'{t:.2f}' for t in bare_runs)} s ({len(rows):,} rows)")

    # First computations: each from no labels (not timed: the delete, VACUUM and CHECKPOINT).
    first = _Aggregations(campaign)
    first_runs: list[float] = []
    others_first = 0.0
    for _ in range(runs):
        _delete_labels(campaign)
        gc.collect()
        with OthersMeter() as meter:
            started = time.perf_counter()
            first()
            first_runs.append(time.perf_counter() - started)
        others_first = max(others_first, meter.cores)
        first.check(items)
    first_s = min(first_runs)
    first_best = first.report("first computation (every label written)", first_s, first_runs)

    recompute = _Aggregations(campaign)
    with OthersMeter() as others_recompute:
        recompute_s, recompute_runs = _best_of(runs, recompute)
    recompute_best = recompute.report("recomputation (nothing changed)", recompute_s, recompute_runs)
    recompute.check(items)
    return [
        Metric("aggregate.judgments", judgments, "rows"),
        Metric("aggregate.bare_group_by_s", bare_s, "s"),
        Metric("aggregate.first_s", first_s, "s"),
        Metric("aggregate.first_sql_select_s", first_best.by_statement.get("SELECT", 0.0), "s"),
        Metric("aggregate.first_sql_insert_s", first_best.by_statement.get("INSERT", 0.0), "s"),
        Metric("aggregate.first_python_s", first_s - first_best.seconds, "s"),
        Metric("aggregate.first_ratio_to_bare_group_by", first_s / bare_s, "x", "≤ 3"),
        Metric("aggregate.recompute_s", recompute_s, "s"),
        Metric("aggregate.recompute_sql_select_s", recompute_best.by_statement.get("SELECT", 0.0), "s"),
        Metric("aggregate.recompute_python_s", recompute_s - recompute_best.seconds, "s"),
        Metric("aggregate.recompute_ratio_to_bare_group_by", recompute_s / bare_s, "x", "≤ 2"),
        Metric(
            "aggregate.others_cpu",
            max(others.cores, others_first, others_recompute.cores),
            "cores",
        ),
    ]
