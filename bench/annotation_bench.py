"""Benchmark of the annotation engine (``make bench``; scripts/bench.sh makes the database).

Three measurements, against the dedicated PostgreSQL database that DATABASE_URL names (it must be
called ``*_bench``: the benchmark writes millions of rows there):

1. next task: ``assignments.assignment_lease_next`` in-process, p50/p99 over fresh workers in
   campaigns of 10k and 1M items, fresh and in a middle state (the first half of the items fully
   rated, with their five submitted assignments each; each measured worker with 50 items
   submitted), and the ratios 1M/10k (goal ≤ 1.5: the cost must not grow with the campaign); the
   plan of the item query is printed;
2. submit: submissions per second (one rater's answers to one item; goal ≥ 300/s on 2 cores) from
   64 concurrent HTTP raters against gunicorn (sync and gthread tried, the better one counts), and
   beside it the judgment rows per second they wrote (an SSI submission writes three: counted in the
   database, not assumed), then the invariants checked in the database. A closed campaign of 20k
   items is rated first, so the load meets tables with rows and statistics. The CPU that gunicorn
   and its PostgreSQL backends spent per submission is measured too, and what other programs on the
   machine took meanwhile: a shared machine shows up there, not as a slow server;
3. aggregate: ``consensus.campaign_aggregate`` over 1M judgments (``--aggregate-judgments``), every
   item fully rated, against a bare GROUP BY over the same rows: the first computation, every label
   written (goal ≤ 3x), and the recomputation of the labelled campaign (goal ≤ 2x).

The table is printed and the figures merged into var/bench/results.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
django.setup()


from django.conf import settings  # noqa: E402

from bench.annotation_aggregate import bench_aggregate  # noqa: E402
from bench.annotation_next import bench_next_task  # noqa: E402
from bench.annotation_submit import bench_submit  # noqa: E402
from bench.httpload import ServerConfig  # noqa: E402
from bench.report import Metric, bench_database_refusal, finish, say  # noqa: E402

# Each part and the prefix of its figures in var/bench/results.json.
PARTS = {"next": "next_task.", "submit": "submit.", "aggregate": "aggregate."}


def _server_config(text: str) -> ServerConfig:
    """``sync:5`` or ``gthread:3x4``."""
    kind, _, size = text.partition(":")
    if kind == "sync":
        return ServerConfig("sync", workers=int(size or 5))
    if kind == "gthread":
        workers, _, threads = (size or "2x4").partition("x")
        return ServerConfig("gthread", workers=int(workers), threads=int(threads or 4))
    raise argparse.ArgumentTypeError(f"{text!r}: expected sync:N or gthread:NxT")


OTHER_PARTS = {
    "search",
    "train",
    "export",
    "inference",
    "report",
    "evaluate",
    "raters",
    "preference",
    "decided",
    "ddp",
    "first_model",
}  # run by the other benchmarks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        default=",".join([*PARTS, *OTHER_PARTS]),
        help=f"comma-separated, of {', '.join([*PARTS, *OTHER_PARTS])}",
    )
    parser.add_argument("--samples", type=int, default=300, help="workers measured per size and state")
    parser.add_argument(
        "--aggregate-judgments", type=int, default=1_000_000, help="judgments of the aggregate part"
    )
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

    refusal = bench_database_refusal()
    if refusal:
        print(f"refusing to run: {refusal}")
        return 2
    database = settings.DATABASES["default"]
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
        metrics += bench_aggregate(args.aggregate_judgments)
    metrics.append(Metric("annotation_bench.wall_s", time.monotonic() - started, "s"))

    finish(metrics, replace=[PARTS[part] for part in parts])
    return 0


if __name__ == "__main__":
    sys.exit(main())
