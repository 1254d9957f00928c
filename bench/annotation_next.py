"""Part 1 of the annotation benchmark, the next task: ``assignments.assignment_lease_next``
in-process, p50/p99 over fresh workers in campaigns of 10k and 1M items, fresh and in a middle
state, and the ratios 1M/10k (the cost must not grow with the campaign)."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from annotation import hot_path
from annotation.models import Campaign
from annotation.services import assignments
from bench import sqldata
from bench.annotation_common import (
    RATERS,
    SIZES,
    TABLES,
    OthersMeter,
    bench_campaign,
    machine_load,
    timed,
    users,
)
from bench.report import Metric, percentile, say


def _lease_each(campaigns: dict[str, Campaign], workers: dict[str, list[User]]) -> dict[str, list[float]]:
    """One ``assignment_lease_next`` per worker, alternating between the campaigns (so that any
    background noise falls on both sizes alike); the seconds each call took, by campaign."""
    timings: dict[str, list[float]] = {label: [] for label in campaigns}
    gc.collect()
    count = min(len(group) for group in workers.values())
    for index in range(count):
        for label, campaign in campaigns.items():
            worker = workers[label][index]
            started = time.perf_counter()
            assignment = assignments.assignment_lease_next(worker=worker, campaign=campaign)
            timings[label].append(time.perf_counter() - started)
            if assignment is None or assignment.item.campaign_id != campaign.pk:
                raise RuntimeError(f"assignment_lease_next gave {assignment!r} to {worker} in {campaign}")
    return timings


def _latency_metrics(state: str, timings: dict[str, list[float]]) -> list[Metric]:
    metrics: list[Metric] = []
    figures: dict[str, dict[int, float]] = {}
    for label, seconds in timings.items():
        figures[label] = {q: percentile(seconds, q) * 1000 for q in (50, 99)}
        for q, value in figures[label].items():
            metrics.append(Metric(f"next_task.{state}.{label}.p{q}", value, "ms"))
        say(
            f"  {state} {label}: p50 {figures[label][50]:.2f} ms, p99 {figures[label][99]:.2f} ms, "
            f"max {max(seconds) * 1000:.2f} ms over {len(seconds)} workers"
        )
    small, big = SIZES
    for q in (50, 99):
        ratio = figures[big][q] / figures[small][q]
        metrics.append(Metric(f"next_task.{state}.p{q}_ratio_1m_10k", ratio, "x", "≤ 1.5"))
    return metrics


def _pick_plan(campaign: Campaign, worker: User) -> list[str]:
    """EXPLAIN ANALYZE of the statement ``assignment_lease_next`` takes the next item with, for this worker
    (rolled back)."""
    params = {"campaign": campaign.pk, "worker": worker.pk, "now": timezone.now()}
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + hot_path.statements().take, params)
            plan = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)
    return plan


def _say_plan(label: str, plan: Sequence[str]) -> None:
    """The plan's nodes with their actual times, and the execution time."""
    say(f"  plan of the item query, {label}:")
    for line in plan:
        if "actual time" in line or "Execution Time" in line or line.strip().startswith("Buffers"):
            say(f"    {line.rstrip()[:150]}")


def bench_next_task(samples: int) -> list[Metric]:
    say(f"next task: campaigns of {', '.join(SIZES)} items, {RATERS} raters each")
    campaigns: dict[str, Campaign] = {}
    for label, size in SIZES.items():
        campaigns[label] = bench_campaign(f"bench next-task {label}")
        with timed(f"{size:,} items inserted"):
            sqldata.insert_items(campaigns[label].pk, size, open_slots=RATERS)
    warm = {label: users(f"bench-warm-{label}-", 30) for label in SIZES}
    fresh = {label: users(f"bench-fresh-{label}-", samples) for label in SIZES}
    middle = {label: users(f"bench-middle-{label}-", samples) for label in SIZES}
    warm_middle = {label: users(f"bench-warm-middle-{label}-", 30) for label in SIZES}
    with timed("VACUUM ANALYZE"):
        sqldata.vacuum_analyze(*TABLES)

    say(f"next task, fresh campaigns: warm-up, then {samples} fresh workers per size; {machine_load()}")
    _lease_each(campaigns, warm)
    for label, campaign in campaigns.items():
        _say_plan(f"fresh {label}", _pick_plan(campaign, fresh[label][-1]))
    with OthersMeter() as others:
        timings = _lease_each(campaigns, fresh)
    metrics = _latency_metrics("fresh", timings)
    metrics.append(Metric("next_task.fresh.others_cpu", others.cores, "cores"))

    say(
        "next task, middle state: the first half of the items fully rated (5 submitted assignments each, "
        "by 1,000 earlier workers), each measured worker with 50 items submitted after them"
    )
    earlier = sqldata.create_users("bench-earlier-", 1000)
    per_worker, per_item = 50, 4
    for label, size in SIZES.items():
        campaign = campaigns[label]
        with timed(f"{label}: first {size // 2:,} items fully rated"):
            sqldata.complete_first_items(campaign.pk, size // 2, workers=earlier, raters=RATERS)
        with timed(f"{label}: {samples * per_worker:,} submitted assignments after them"):
            sqldata.submit_frontier(
                campaign.pk,
                offset=size // 2,
                workers=[worker.pk for worker in middle[label]],
                per_worker=per_worker,
                per_item=per_item,
                raters=RATERS,
            )
    with timed("VACUUM ANALYZE"):
        sqldata.vacuum_analyze(*TABLES)
    say(f"next task, middle state: warm-up, then {samples} workers per size; {machine_load()}")
    _lease_each(campaigns, warm_middle)
    for label, campaign in campaigns.items():
        _say_plan(f"middle {label}", _pick_plan(campaign, middle[label][-1]))
    with OthersMeter() as others:
        timings = _lease_each(campaigns, middle)
    metrics += _latency_metrics("middle", timings)
    metrics.append(Metric("next_task.middle.others_cpu", others.cores, "cores"))
    # Out of the way of the next measurements (which ask for "any open SSI campaign").
    Campaign.objects.filter(pk__in=[c.pk for c in campaigns.values()]).update(status=Campaign.Status.CLOSED)
    return metrics
