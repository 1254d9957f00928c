"""Part 3 of the annotation benchmark, aggregate: ``consensus.campaign_aggregate`` over 1M
judgments against a bare GROUP BY over the same rows."""

from __future__ import annotations

import gc
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
    (SELECT, INSERT…)."""

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


def bench_aggregate(runs: int = 3) -> list[Metric]:
    items = 66_667
    say(f"aggregate: {items:,} SSI items x {RATERS} raters x 3 attributes")
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

    timers: list[SqlTimer] = []
    labelled: list[int] = []

    def aggregate() -> None:
        timer = SqlTimer()
        with connection.execute_wrapper(timer):
            labelled.append(consensus.campaign_aggregate(campaign=campaign))
        timers.append(timer)

    with OthersMeter() as others_aggregate:
        aggregate_s, aggregate_runs = _best_of(runs, aggregate)
    best = timers[aggregate_runs.index(aggregate_s)]
    say(
        f"  aggregate_campaign: {', '.join(f'{t:.2f}' for t in aggregate_runs)} s "
        f"({labelled[-1]:,} items labelled)"
    )
    in_driver = ", ".join(f"{statement} {seconds:.2f} s" for statement, seconds in best.by_statement.items())
    say(
        f"  best run: {best.queries} queries; in the database driver {best.seconds:.2f} s ({in_driver}); "
        f"in Python {aggregate_s - best.seconds:.2f} s"
    )
    labels = ConsensusLabel.objects.filter(item__campaign=campaign).count()
    if labelled[-1] != items or labels != items * 3:
        raise RuntimeError(f"campaign_aggregate labelled {labelled[-1]} items, {labels} labels")
    return [
        Metric("aggregate.judgments", judgments, "rows"),
        Metric("aggregate.campaign_s", aggregate_s, "s"),
        # The first run writes every label; later runs rewrite only labels whose counts changed.
        Metric("aggregate.first_run_s", aggregate_runs[0], "s"),
        Metric("aggregate.first_run_ratio_to_bare_group_by", aggregate_runs[0] / bare_s, "x"),
        Metric("aggregate.campaign_sql_select_s", best.by_statement.get("SELECT", 0.0), "s"),
        Metric("aggregate.campaign_sql_insert_s", best.by_statement.get("INSERT", 0.0), "s"),
        Metric("aggregate.campaign_python_s", aggregate_s - best.seconds, "s"),
        Metric("aggregate.bare_group_by_s", bare_s, "s"),
        Metric("aggregate.ratio_to_bare_group_by", aggregate_s / bare_s, "x", "≤ 2"),
        Metric("aggregate.others_cpu", max(others.cores, others_aggregate.cores), "cores"),
    ]
