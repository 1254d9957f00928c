"""Benchmark of labels that know their raters (``make bench``, part ``raters``; the bench database):
a campaign of ``--raters-judgments`` judgments (1M: 66,667 SSI items x 5 raters x 3 attributes)
aggregated with Dawid–Skene (``annotation.services.rater_models.campaign_rater_aggregate``, what the
worker runs: reading the judgments, fitting each attribute with crowd-kit, storing the soft labels
and the rater estimates), against the majority vote's computation of the same campaign
(``consensus.campaign_aggregate``, as ``bench/annotation_aggregate.py`` measures it: first from no
labels, then the recomputation with nothing changed), best of ``runs`` each.

The crowd is synthetic with a known truth, so the figures say how right each aggregation is too:
``--raters-pool`` raters (500), each item rated by 5 of them (item i by raters 5i … 5i+4 modulo the
pool); 60 % of the raters are careful (right 90 % of the time), the others noisy (right 60 %); each
attribute of an item is true for 30 % of the items. Answers and truth are drawn by a hash in SQL.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
django.setup()

from django.db import connection  # noqa: E402

from annotation.models import Campaign, ConsensusLabel, RaterModelRun  # noqa: E402
from annotation.services import consensus, rater_models  # noqa: E402
from bench import sqldata  # noqa: E402
from bench.report import Metric, bench_database_refusal, finish, part_skipped, say  # noqa: E402

PART = "raters"
PREFIX = "raters."
RATERS = 5
ATTRIBUTES = ("interesting", "sensible", "specific")
TABLES = ("annotation_item", "annotation_assignment", "annotation_judgment")

# Truth and answers by hash (``hashint8`` is PostgreSQL's, stable across runs): attribute n of item i
# is true when hash(8i + n) mod 100 < 30; a rater w is careful when hash(7919w) mod 100 < 60; an
# answer is right when hash(4 * assignment id + n) mod 100 is under 90 (careful) or 60 (noisy).
_JUDGMENTS = """
INSERT INTO annotation_judgment (assignment_id, item_id, attribute, value, raw_value)
SELECT a.id, a.item_id, q.attribute, v.value, v.value
FROM annotation_assignment AS a
JOIN annotation_item AS i ON i.id = a.item_id
CROSS JOIN unnest(%(attributes)s::text[]) WITH ORDINALITY AS q(attribute, n)
CROSS JOIN LATERAL (
    SELECT CASE WHEN ((hashint8(a.item_id * 8 + q.n) & 65535) %% 100 < 30)
                     = ((hashint8(a.id * 4 + q.n) & 65535) %% 100
                        < CASE WHEN (hashint8(a.worker_id * 7919) & 65535) %% 100 < 60 THEN 90 ELSE 60 END)
                THEN 'yes' ELSE 'no' END AS value
) AS v
WHERE i.campaign_id = %(campaign)s
ORDER BY a.id, q.attribute
"""

# The share of a label table's labels of the campaign that equal the truth.
_RIGHT = {
    table: f"""
SELECT avg((((hashint8(l.item_id * 8 + q.n) & 65535) %% 100 < 30)::int = l.label)::int)
FROM {table} AS l
JOIN annotation_item AS i ON i.id = l.item_id
JOIN unnest(%(attributes)s::text[]) WITH ORDINALITY AS q(attribute, n) ON q.attribute = l.attribute
WHERE i.campaign_id = %(campaign)s
"""  # noqa: S608 - the two table names below, not input
    for table in ("annotation_raterawarelabel", "annotation_consensuslabel")
}


def _campaign(judgments: int, pool: int) -> tuple[Campaign, int]:
    """A closed SSI campaign whose every item is rated by 5 of ``pool`` raters; returns it and the
    judgments inserted."""
    items = -(-judgments // (RATERS * len(ATTRIBUTES)))
    campaign = Campaign.objects.create(
        name="bench raters", kind=Campaign.Kind.SSI, raters_per_item=RATERS, status=Campaign.Status.CLOSED
    )
    started = time.perf_counter()
    sqldata.insert_items(campaign.pk, items, open_slots=0, judgment_count=RATERS)
    workers = sqldata.create_users("bench-raters-", pool)
    sqldata.execute(
        """
        INSERT INTO annotation_assignment (state, expires_at, created_at, submitted_at, submission,
                                           worker_id, item_id)
        SELECT 'submitted', now(), now(), now(), '{}'::jsonb,
               (%(workers)s::int[])[1 + ((i.id * 5 + k) %% %(pool)s)], i.id
        FROM annotation_item AS i CROSS JOIN generate_series(0, 4) AS k
        WHERE i.campaign_id = %(campaign)s
        ORDER BY i.id, k
        """,
        {"workers": workers, "pool": pool, "campaign": campaign.pk},
    )
    inserted = sqldata.execute(_JUDGMENTS, {"attributes": list(ATTRIBUTES), "campaign": campaign.pk})
    sqldata.vacuum_analyze(*TABLES)
    say(f"  {items:,} items, {inserted:,} judgments by {pool} raters: {time.perf_counter() - started:.1f} s")
    return campaign, inserted


def _best_of(
    runs: int, action: Callable[[], Any], before: Callable[[], None] | None = None
) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        gc.collect()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times), times


def _right(table: str, campaign: Campaign) -> float:
    with connection.cursor() as cursor:
        cursor.execute(_RIGHT[table], {"attributes": list(ATTRIBUTES), "campaign": campaign.pk})
        return float(cursor.fetchone()[0])


def bench_raters(judgments: int = 1_000_000, pool: int = 500, runs: int = 3) -> list[Metric]:
    say(f"raters: Dawid–Skene vs majority vote over {judgments:,} judgments")
    campaign, inserted = _campaign(judgments, pool)

    def no_labels() -> None:
        ConsensusLabel.objects.filter(item__campaign=campaign).delete()
        sqldata.vacuum_analyze("annotation_consensuslabel")

    majority_first_s, first_runs = _best_of(
        runs, lambda: consensus.campaign_aggregate(campaign=campaign), no_labels
    )
    say(f"  majority, first computation: {', '.join(f'{t:.2f}' for t in first_runs)} s")
    majority_s, majority_runs = _best_of(runs, lambda: consensus.campaign_aggregate(campaign=campaign))
    say(f"  majority, recomputation (nothing changed): {', '.join(f'{t:.2f}' for t in majority_runs)} s")
    done: list[RaterModelRun] = []
    ds_s, ds_runs = _best_of(
        runs, lambda: done.append(rater_models.campaign_rater_aggregate(campaign=campaign))
    )
    run = done[-1]
    say(f"  Dawid–Skene (read, fit, store): {', '.join(f'{t:.2f}' for t in ds_runs)} s")
    say(f"    EM iterations {run.iterations}")
    ds_right = _right("annotation_raterawarelabel", campaign)
    majority_right = _right("annotation_consensuslabel", campaign)
    agreement = min(run.agreement.values())
    say(
        f"  right against the known truth: Dawid–Skene {ds_right:.2%}, majority {majority_right:.2%}; "
        f"agreement between them (lowest attribute) {agreement:.2%}"
    )
    return [
        Metric("raters.judgments", inserted, "rows"),
        Metric("raters.majority_first_s", majority_first_s, "s"),
        Metric("raters.majority_recompute_s", majority_s, "s"),
        Metric("raters.dawid_skene_s", ds_s, "s"),
        Metric("raters.dawid_skene_ratio_to_majority_first", ds_s / majority_first_s, "x"),
        Metric("raters.dawid_skene_ratio_to_majority_recompute", ds_s / majority_s, "x"),
        Metric("raters.dawid_skene_right", ds_right, "share"),
        Metric("raters.majority_right", majority_right, "share"),
        Metric("raters.agreement_lowest_attribute", agreement, "share"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    parser.add_argument("--raters-judgments", type=int, default=1_000_000, help="judgments in the campaign")
    parser.add_argument("--raters-pool", type=int, default=500, help="raters in the crowd")
    parser.add_argument("--raters-runs", type=int, default=3, help="runs of each, the best counts")
    args, _others = parser.parse_known_args(argv)
    if part_skipped(args.parts, PART, "raters"):
        return 0
    refusal = bench_database_refusal()
    if refusal:
        print(f"refusing to run: {refusal}")
        return 2
    metrics = bench_raters(args.raters_judgments, args.raters_pool, args.raters_runs)
    finish(metrics, replace=[PREFIX])
    return 0


if __name__ == "__main__":
    sys.exit(main())
