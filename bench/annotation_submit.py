"""Part 2 of the annotation benchmark, submit: submissions per second from concurrent HTTP raters
against gunicorn, the judgment rows per second they wrote beside it, then the invariants checked in
the database."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from django.db import connection

from annotation.models import Campaign
from bench import cpu, sqldata
from bench.annotation_common import (
    LOG_DIR,
    RATERS,
    TABLES,
    bench_campaign,
    machine_load,
    timed,
)
from bench.httpload import LoadResult, Rater, ServerConfig, gunicorn, run_load
from bench.report import Metric, percentile, say
from groundwork.accounts import api_token_for, user_set_role
from groundwork.roles import Role


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


def _judgment_rows(assignment_ids: Sequence[int]) -> int:
    """The judgment rows that the submissions of these assignments wrote."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM annotation_judgment WHERE assignment_id = ANY(%s::bigint[])",
            [list(assignment_ids)],
        )
        return int(cursor.fetchone()[0])


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
    campaign = bench_campaign("bench submit history", status=Campaign.Status.CLOSED)
    sqldata.insert_items(campaign.pk, HISTORY_ITEMS, open_slots=0, judgment_count=RATERS)
    sqldata.rate_every_item(campaign.pk, sqldata.create_users("bench-history-", RATERS))


def bench_submit(
    *, clients: int, warmup_s: float, duration_s: float, configs: Sequence[ServerConfig]
) -> list[Metric]:
    say(f"submit: {clients} HTTP raters against gunicorn, {warmup_s:.0f} s warm-up + {duration_s:.0f} s")
    say(f"  {machine_load()}")
    Campaign.objects.filter(status=Campaign.Status.OPEN).update(status=Campaign.Status.CLOSED)
    with timed(f"history: {HISTORY_ITEMS:,} items of a closed campaign rated by {RATERS} raters each"):
        _history()
    campaign = bench_campaign("bench submit")
    items = 20_000
    with timed(f"{items:,} items inserted"):
        sqldata.insert_items(campaign.pk, items, open_slots=RATERS)
    with timed(f"{clients} crowdworkers with tokens"):
        raters = _raters(clients)
    metrics: list[Metric] = []
    results: dict[str, LoadResult] = {}
    rates: dict[str, float] = {}
    row_rates: dict[str, float] = {}
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
        rows_rate = _judgment_rows(result.accepted_ids_in_window()) / result.window_s
        done = max(1, len(accepted))
        server_ms = max(1e-6, (monitor.cpu_s["gunicorn"] + monitor.cpu_s["backends"]) * 1000 / done)
        waits = monitor.mean_waits()
        latencies = [took * 1000 for _, took in accepted] or [0.0]
        errors = result.errors()
        crashes = _server_errors(log.read_text())
        results[config.slug] = result
        rates[config.slug] = rate
        row_rates[config.slug] = rows_rate
        per_second = result.per_second()
        say(
            f"    {rate:.1f} submissions/s (per second: min {min(per_second)}, max {max(per_second)}), "
            f"{rows_rate:.1f} judgment rows/s, "
            f"submit p50 {percentile(latencies, 50):.0f} ms p99 {percentile(latencies, 99):.0f} ms, "
            f"errors {dict(errors) or 'none'}, tracebacks in the server log {crashes}"
        )
        say(
            "    CPU per submission: "
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
            Metric(f"{prefix}.submissions_per_s", rate, "1/s"),
            Metric(f"{prefix}.judgment_rows_per_s", rows_rate, "1/s"),
            Metric(f"{prefix}.submit_p50", percentile(latencies, 50), "ms"),
            Metric(f"{prefix}.submit_p99", percentile(latencies, 99), "ms"),
            Metric(f"{prefix}.server_cpu_per_submission", server_ms, "ms"),
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
    say(f"  better server: {chosen.label} ({rates[best]:.1f} submissions/s)")
    with timed("invariants checked"):
        violations = _invariants(campaign, list(results.values()))
    for name, n in violations.items():
        say(f"    {'ok ' if n == 0 else 'BAD'} {name}: {n}")
    submitted = sum(len(rater.accepted) for result in results.values() for rater in result.raters)
    metrics = [
        Metric("submit.submissions_per_s", rates[best], "1/s", "≥ 300"),
        Metric("submit.judgment_rows_per_s", row_rates[best], "1/s"),
        Metric("submit.server", chosen.label, ""),
        Metric("submit.errors", sum(results[best].errors().values()), "requests", "= 0"),
        Metric("submit.invariant_violations", sum(violations.values()), "", "= 0"),
        Metric("submit.submissions_checked", submitted, "assignments"),
        *metrics,
    ]
    return metrics
