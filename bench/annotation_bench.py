"""Benchmark of the annotation engine (``make bench``; scripts/bench.sh makes the database).

Three measurements, against the dedicated PostgreSQL database that DATABASE_URL names (it must be
called ``*_bench``: the benchmark writes millions of rows there):

1. next task: ``assignments.assignment_lease_next`` in-process, p50/p99 over fresh workers in
   campaigns of 10k and 1M items, fresh and in a middle state (the first half of the items fully
   rated, with their five submitted assignments each; each measured worker with 50 items
   submitted), and the ratios 1M/10k (goal ≤ 1.5: the cost must not grow with the campaign); the
   plan of the item query is printed;
2. submit: judgments per second from 64 concurrent HTTP raters against gunicorn (sync and gthread
   tried, the better one counts; goal ≥ 300/s on 2 cores), then the invariants checked in the database.
   A closed campaign of 20k items is rated first, so the load meets tables with rows and statistics.
   The CPU that gunicorn and its PostgreSQL backends spent per judgment is measured too, and what other
   programs on the machine took meanwhile: a shared machine shows up there, not as a slow server;
3. aggregate: ``consensus.campaign_aggregate`` over 1M judgments against a bare GROUP BY over the same
   rows (goal ≤ 2x).

The table is printed and the figures merged into var/bench/results.json.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from annotation import hot_path  # noqa: E402
from annotation.models import Campaign, ConsensusLabel  # noqa: E402
from annotation.services import assignments, consensus  # noqa: E402
from bench import cpu, sqldata  # noqa: E402
from bench.httpload import LoadResult, Rater, ServerConfig, gunicorn, run_load  # noqa: E402
from bench.report import ROOT, Metric, percentile, print_table, say, write_results  # noqa: E402
from groundwork.accounts import api_token_for, user_set_role  # noqa: E402
from groundwork.roles import Role  # noqa: E402

RATERS = 5
SIZES = {"10k": 10_000, "1m": 1_000_000}
# Each part and the prefix of its figures in var/bench/results.json.
PARTS = {"next": "next_task.", "submit": "submit.", "aggregate": "aggregate."}
TABLES = ("annotation_item", "annotation_assignment", "annotation_judgment", "auth_user")
LOG_DIR = ROOT / "var" / "bench"


def _campaign(name: str, *, status: str = Campaign.Status.OPEN) -> Campaign:
    return Campaign.objects.create(
        name=name, kind=Campaign.Kind.SSI, raters_per_item=RATERS, status=status, instructions="benchmark"
    )


def _users(prefix: str, count: int) -> list[User]:
    ids = sqldata.create_users(prefix, count)
    return list(User.objects.filter(pk__in=ids).order_by("pk"))


@contextmanager
def _timed(label: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    say(f"  {label}: {time.perf_counter() - started:.1f} s")


class OthersMeter:
    """How many cores other programs on the machine kept busy while the block ran: the machine's busy
    time less this process and its database backend. The figures are only as good as this is small."""

    def __init__(self) -> None:
        self.cores = 0.0

    def _ours(self) -> float:
        return cpu.self_seconds() + cpu.process_seconds(self._backend)

    def __enter__(self) -> OthersMeter:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self._backend = int(cursor.fetchone()[0])
        self._start = (time.monotonic(), cpu.machine_busy_seconds(), self._ours())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, machine, ours = self._start
        seconds = time.monotonic() - wall
        others = cpu.machine_busy_seconds() - machine - (self._ours() - ours)
        self.cores = max(0.0, others) / max(seconds, 1e-9)
        if self.cores > 0.2:
            say(f"  WARNING: other programs kept {self.cores:.2f} cores busy meanwhile: figures disturbed")


def _machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# --- 1. next task ------------------------------------------------------------------------------------


def _lease_each(campaigns: dict[str, Campaign], workers: dict[str, list[User]]) -> dict[str, list[float]]:
    """One ``assign_next`` per worker, alternating between the campaigns (so that any background noise
    falls on both sizes alike); the seconds each call took, by campaign."""
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
                raise RuntimeError(f"assign_next gave {assignment!r} to {worker} in {campaign}")
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
    """EXPLAIN ANALYZE of the statement ``assign_next`` takes the next item with, for this worker
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
        campaigns[label] = _campaign(f"bench next-task {label}")
        with _timed(f"{size:,} items inserted"):
            sqldata.insert_items(campaigns[label].pk, size, open_slots=RATERS)
    warm = {label: _users(f"bench-warm-{label}-", 30) for label in SIZES}
    fresh = {label: _users(f"bench-fresh-{label}-", samples) for label in SIZES}
    middle = {label: _users(f"bench-middle-{label}-", samples) for label in SIZES}
    warm_middle = {label: _users(f"bench-warm-middle-{label}-", 30) for label in SIZES}
    with _timed("VACUUM ANALYZE"):
        sqldata.vacuum_analyze(*TABLES)

    say(f"next task, fresh campaigns: warm-up, then {samples} fresh workers per size; {_machine_load()}")
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
        with _timed(f"{label}: first {size // 2:,} items fully rated"):
            sqldata.complete_first_items(campaign.pk, size // 2, workers=earlier, raters=RATERS)
        with _timed(f"{label}: {samples * per_worker:,} submitted assignments after them"):
            sqldata.submit_frontier(
                campaign.pk,
                offset=size // 2,
                workers=[worker.pk for worker in middle[label]],
                per_worker=per_worker,
                per_item=per_item,
                raters=RATERS,
            )
    with _timed("VACUUM ANALYZE"):
        sqldata.vacuum_analyze(*TABLES)
    say(f"next task, middle state: warm-up, then {samples} workers per size; {_machine_load()}")
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


# --- 2. submit over HTTP -----------------------------------------------------------------------------


def _raters(count: int) -> list[tuple[int, str]]:
    """``count`` crowdworkers with API tokens (the platform's own account functions)."""
    out = []
    for index in range(count):
        user = user_set_role(username=f"bench-rater-{index:03d}", role=Role.CROWDWORKER)
        out.append((user.pk, api_token_for(user=user)))
    return out


def _invariants(campaign: Campaign, results: Sequence[LoadResult]) -> dict[str, int]:
    """Violations of what must hold after concurrent submissions, by name (each should be 0)."""
    accepted = [(assignment, r.worker_id) for res in results for r in res.raters for assignment in r.accepted]
    ids = [assignment for assignment, _ in accepted]
    with connection.cursor() as cursor:

        def count(sql: str, params: Sequence[Any]) -> int:
            cursor.execute(sql, params)
            return int(cursor.fetchone()[0])

        violations = {
            "items with more than 5 submitted": count(
                """SELECT count(*) FROM (
                       SELECT a.item_id
                       FROM annotation_assignment a JOIN annotation_item i ON i.id = a.item_id
                       WHERE i.campaign_id = %s AND a.state = 'submitted'
                       GROUP BY a.item_id HAVING count(*) > %s) AS over""",
                [campaign.pk, campaign.raters_per_item],
            ),
            "(worker, item) pairs twice": count(
                """SELECT count(*) FROM (
                       SELECT a.worker_id, a.item_id
                       FROM annotation_assignment a JOIN annotation_item i ON i.id = a.item_id
                       WHERE i.campaign_id = %s GROUP BY 1, 2 HAVING count(*) > 1) AS twice""",
                [campaign.pk],
            ),
            "201s answered twice for one assignment": len(ids) - len(set(ids)),
            "201s not stored (submitted, own worker, 3 judgments)": count(
                """SELECT count(*)
                   FROM unnest(%s::bigint[], %s::int[]) AS got(id, worker_id)
                   LEFT JOIN annotation_assignment a ON a.id = got.id
                   LEFT JOIN LATERAL (SELECT count(*) AS n FROM annotation_judgment j
                                      WHERE j.assignment_id = got.id) AS j ON true
                   WHERE a.id IS NULL OR a.state <> 'submitted' OR a.worker_id <> got.worker_id
                      OR j.n <> 3""",
                [ids, [worker for _, worker in accepted]],
            ),
            "items whose slots do not add up (open + leased + submitted != 5, or judgment_count)": count(
                """SELECT count(*) FROM annotation_item i
                   LEFT JOIN (SELECT item_id,
                                     count(*) FILTER (WHERE state = 'submitted') AS submitted,
                                     count(*) FILTER (WHERE state = 'leased') AS leased
                              FROM annotation_assignment GROUP BY item_id) AS a ON a.item_id = i.id
                   WHERE i.campaign_id = %s
                     AND (i.open_slots + coalesce(a.submitted, 0) + coalesce(a.leased, 0) <> %s
                          OR i.judgment_count <> coalesce(a.submitted, 0))""",
                [campaign.pk, campaign.raters_per_item],
            ),
            "submitted assignments no client got a 201 for": count(
                """SELECT count(*) FROM annotation_assignment a JOIN annotation_item i ON i.id = a.item_id
                   WHERE i.campaign_id = %s AND a.state = 'submitted' AND NOT (a.id = ANY(%s::bigint[]))""",
                [campaign.pk, ids],
            ),
        }
    return violations


def _server_errors(log_text: str) -> int:
    return log_text.count("Traceback")


BACKENDS = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
WAITS = """
    SELECT count(*) FILTER (WHERE state = 'active'),
           count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'),
           count(*) FILTER (WHERE state = 'active' AND wait_event_type IN ('LWLock', 'IO')),
           count(*) FILTER (WHERE state IN ('idle in transaction', 'idle in transaction (aborted)'))
    FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


class LoadMonitor:
    """Over the measured window: CPU seconds of gunicorn (master and workers), of the PostgreSQL
    backends serving the bench database, of this process (the raters) and of the whole machine; and,
    sampled a few times a second, what the backends are doing (running, waiting on a row lock, on
    WAL/IO)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.start: dict[str, Any] = {}
        self.cpu_s: dict[str, float] = {}
        self.wall_s = 0.0
        self.samples: list[tuple[int, int, int, int]] = []

    def _backends(self) -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(BACKENDS)
            return [row[0] for row in cursor.fetchall()]

    def _snapshot(self) -> dict[str, Any]:
        return {
            "wall": time.monotonic(),
            "gunicorn": cpu.tree_seconds([self.server_pid, *cpu.children(self.server_pid)]),
            "backends": cpu.tree_seconds(self._backends()),
            "raters": cpu.self_seconds(),
            "machine": cpu.machine_busy_seconds(),
        }

    def window_start(self) -> None:
        self.start = self._snapshot()

    def sample(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(WAITS)
            self.samples.append(tuple(int(n) for n in cursor.fetchone()))  # type: ignore[arg-type]

    def window_end(self) -> None:
        end = self._snapshot()
        self.wall_s = end["wall"] - self.start["wall"]
        for group in ("gunicorn", "backends"):
            before = self.start[group]
            self.cpu_s[group] = sum(seconds - before.get(pid, 0.0) for pid, seconds in end[group].items())
        self.cpu_s["raters"] = end["raters"] - self.start["raters"]
        self.cpu_s["machine"] = end["machine"] - self.start["machine"]
        ours = self.cpu_s["gunicorn"] + self.cpu_s["backends"] + self.cpu_s["raters"]
        self.cpu_s["others"] = max(0.0, self.cpu_s["machine"] - ours)

    def mean_waits(self) -> dict[str, float]:
        names = ("active", "waiting on a lock", "waiting on WAL/IO", "idle in transaction")
        if not self.samples:
            return dict.fromkeys(names, 0.0)
        return {name: sum(s[i] for s in self.samples) / len(self.samples) for i, name in enumerate(names)}


HISTORY_ITEMS = 20_000


def _history() -> None:
    """A campaign rated before, closed: the load meets tables with rows and statistics, as a live
    server's are. On empty tables PostgreSQL would plan the prepared statements of the hot path
    for empty tables (sequential scans of the assignments) and keep those plans while they grow."""
    campaign = _campaign("bench submit history", status=Campaign.Status.CLOSED)
    sqldata.insert_items(campaign.pk, HISTORY_ITEMS, open_slots=0, judgment_count=RATERS)
    sqldata.rate_every_item(campaign.pk, sqldata.create_users("bench-history-", RATERS))


def bench_submit(
    *, clients: int, warmup_s: float, duration_s: float, configs: Sequence[ServerConfig]
) -> list[Metric]:
    say(f"submit: {clients} HTTP raters against gunicorn, {warmup_s:.0f} s warm-up + {duration_s:.0f} s")
    say(f"  {_machine_load()}")
    Campaign.objects.filter(status=Campaign.Status.OPEN).update(status=Campaign.Status.CLOSED)
    with _timed(f"history: {HISTORY_ITEMS:,} items of a closed campaign rated by {RATERS} raters each"):
        _history()
    campaign = _campaign("bench submit")
    items = 20_000
    with _timed(f"{items:,} items inserted"):
        sqldata.insert_items(campaign.pk, items, open_slots=RATERS)
    with _timed(f"{clients} crowdworkers with tokens"):
        raters = _raters(clients)
    metrics: list[Metric] = []
    results: dict[str, LoadResult] = {}
    rates: dict[str, float] = {}
    for config in configs:
        sqldata.vacuum_analyze(*TABLES)
        log = LOG_DIR / f"gunicorn-{config.slug}.log"
        say(f"  gunicorn {config.label}")
        with gunicorn(config, log=log) as server:
            monitor = LoadMonitor(server.pid)
            result = run_load(
                [Rater(worker_id, token) for worker_id, token in raters],
                port=server.port,
                warmup_s=warmup_s,
                duration_s=duration_s,
                monitor=monitor,
            )
        accepted = result.accepted_in_window()
        rate = len(accepted) / result.window_s
        done = max(1, len(accepted))
        server_ms = max(1e-6, (monitor.cpu_s["gunicorn"] + monitor.cpu_s["backends"]) * 1000 / done)
        waits = monitor.mean_waits()
        latencies = [took * 1000 for _, took in accepted] or [0.0]
        errors = result.errors()
        crashes = _server_errors(log.read_text())
        results[config.slug] = result
        rates[config.slug] = rate
        per_second = result.per_second()
        say(
            f"    {rate:.1f} judgments/s (per second: min {min(per_second)}, max {max(per_second)}), "
            f"submit p50 {percentile(latencies, 50):.0f} ms p99 {percentile(latencies, 99):.0f} ms, "
            f"errors {dict(errors) or 'none'}, tracebacks in the server log {crashes}"
        )
        say(
            "    CPU per judgment: "
            f"gunicorn {monitor.cpu_s['gunicorn'] * 1000 / done:.1f} ms + "
            f"PostgreSQL {monitor.cpu_s['backends'] * 1000 / done:.1f} ms "
            f"(raters {monitor.cpu_s['raters'] * 1000 / done:.1f} ms); "
            f"other programs used {monitor.cpu_s['others'] / monitor.wall_s:.2f} cores meanwhile"
        )
        say("    database backends on average: " + ", ".join(f"{v:.1f} {k}" for k, v in waits.items()))
        if any(rater.exhausted for rater in result.raters):
            say("    WARNING: some raters ran out of items; the campaign is too small")
        prefix = f"submit.{config.slug}"
        metrics += [
            Metric(f"{prefix}.judgments_per_s", rate, "1/s"),
            Metric(f"{prefix}.submit_p50", percentile(latencies, 50), "ms"),
            Metric(f"{prefix}.submit_p99", percentile(latencies, 99), "ms"),
            Metric(f"{prefix}.server_cpu_per_judgment", server_ms, "ms"),
            Metric(f"{prefix}.capacity_if_alone", (os.cpu_count() or 1) * 1000 / server_ms, "1/s"),
            Metric(f"{prefix}.others_cpu", monitor.cpu_s["others"] / monitor.wall_s, "cores"),
            Metric(f"{prefix}.backends_waiting_on_locks", waits["waiting on a lock"], "backends"),
            Metric(f"{prefix}.errors", sum(errors.values()), "requests", "= 0"),
            Metric(f"{prefix}.server_tracebacks", crashes, "", "= 0"),
        ]
        metrics += [
            Metric(f"{prefix}.errors.{kind.replace(' ', '_')}", n, "requests")
            for kind, n in sorted(errors.items())
        ]
    best = max(rates, key=rates.__getitem__)
    chosen = next(config for config in configs if config.slug == best)
    say(f"  better server: {chosen.label} ({rates[best]:.1f} judgments/s)")
    with _timed("invariants checked"):
        violations = _invariants(campaign, list(results.values()))
    for name, n in violations.items():
        say(f"    {'ok ' if n == 0 else 'BAD'} {name}: {n}")
    submitted = sum(len(rater.accepted) for result in results.values() for rater in result.raters)
    metrics = [
        Metric("submit.judgments_per_s", rates[best], "1/s", "≥ 300"),
        Metric("submit.server", chosen.label, ""),
        Metric("submit.errors", sum(results[best].errors().values()), "requests", "= 0"),
        Metric("submit.invariant_violations", sum(violations.values()), "", "= 0"),
        Metric("submit.judgments_checked", submitted, "assignments"),
        *metrics,
    ]
    return metrics


# --- 3. aggregation ----------------------------------------------------------------------------------

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
    campaign = _campaign("bench aggregate", status=Campaign.Status.CLOSED)
    with _timed(f"{items:,} items inserted"):
        sqldata.insert_items(campaign.pk, items, open_slots=0, judgment_count=RATERS)
    workers = sqldata.create_users("bench-aggregate-", RATERS)
    with _timed("assignments and judgments inserted"):
        assignments, judgments = sqldata.rate_every_item(campaign.pk, workers)
    say(f"  {assignments:,} assignments, {judgments:,} judgments")
    with _timed("VACUUM ANALYZE"):
        sqldata.vacuum_analyze(*TABLES)

    rows: list[Any] = []

    def bare() -> None:
        with connection.cursor() as cursor:
            cursor.execute(BARE_GROUP_BY, [campaign.pk])
            rows[:] = cursor.fetchall()

    say(f"  {_machine_load()}")
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
        raise RuntimeError(f"aggregate_campaign labelled {labelled[-1]} items, {labels} labels")
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


# --- main --------------------------------------------------------------------------------------------


def _server_config(text: str) -> ServerConfig:
    """``sync:5`` or ``gthread:3x4``."""
    kind, _, size = text.partition(":")
    if kind == "sync":
        return ServerConfig("sync", workers=int(size or 5))
    if kind == "gthread":
        workers, _, threads = (size or "2x4").partition("x")
        return ServerConfig("gthread", workers=int(workers), threads=int(threads or 4))
    raise argparse.ArgumentTypeError(f"{text!r}: expected sync:N or gthread:NxT")


OTHER_PARTS = {"search", "train", "export", "inference"}  # run by the other benchmarks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        default=",".join([*PARTS, *OTHER_PARTS]),
        help=f"comma-separated, of {', '.join([*PARTS, *OTHER_PARTS])}",
    )
    parser.add_argument("--samples", type=int, default=300, help="workers measured per size and state")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of HTTP load not counted")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of HTTP load counted")
    parser.add_argument(
        "--server",
        type=_server_config,
        action="append",
        help="gunicorn to try: sync:N or gthread:NxT (repeatable; default sync:5 and gthread:2x4)",
    )
    # Options and parts of the other benchmarks (bench/toolset_bench.py) are theirs.
    args, _ = parser.parse_known_args(argv)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS) - OTHER_PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}")
    parts = [part for part in parts if part in PARTS]
    if not parts:
        say("annotation benchmark: skipped (no part of it asked for)")
        return 0

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql" or not database["NAME"].endswith("_bench"):
        print(
            f"refusing to run: DATABASE_URL must name a PostgreSQL *_bench database, not {database['NAME']!r}"
        )
        return 2
    say(f"database {database['NAME']} on {database['HOST']}:{database['PORT']}, {os.cpu_count()} CPUs")

    started = time.monotonic()
    metrics: list[Metric] = []
    if "next" in parts:
        metrics += bench_next_task(args.samples)
    if "submit" in parts:
        configs = args.server or [_server_config("sync:5"), _server_config("gthread:2x4")]
        metrics += bench_submit(
            clients=args.clients, warmup_s=args.warmup, duration_s=args.duration, configs=configs
        )
    if "aggregate" in parts:
        metrics += bench_aggregate()
    metrics.append(Metric("annotation_bench.wall_s", time.monotonic() - started, "s"))

    print()
    print_table(metrics)
    path = write_results(metrics, replace=[PARTS[part] for part in parts])
    say(f"results merged into {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
