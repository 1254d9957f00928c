"""Benchmark "decided" (``make bench``, part ``decided``): how many ratings stopping once the answer
is decided saves on real per-rater data, and that no hard label changes (issue 17, part 1).

Replays FED (SSI, 5 raters) and ConvAbuse (safety, 3 raters) from ``shared/external-data`` in
random rater orders, ``--seeds`` of them (``bench/decided_replay.py`` says how each data set is
read). Per data set: the share of ratings saved (mean over the seeds, and the lowest and highest
seed), the items decided before their last rater (mean per seed), and the items whose labels differ
from their full panel's over every seed (goal = 0). No database: the decision and the labels are
the platform's own functions (``consensus.item_decided``, ``consensus.item_labels``).

Without the data (``--data``, ``EXTERNAL_DATA_DIR``, or ``shared/external-data`` beside or inside
the checkout) it says so and measures nothing. The table is printed and the figures merged into
var/bench/results.json (``decided.*``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
django.setup()

from bench.decided_replay import FED_FILE, data_sets, replay, summary  # noqa: E402
from bench.report import ROOT, Metric, finish, part_skipped, say  # noqa: E402

PART = "decided"
PREFIX = "decided."


def external_data(given: str | None) -> Path | None:
    """The folder of the third-party data: ``given``, EXTERNAL_DATA_DIR, or shared/external-data
    inside or beside the checkout (as the FED tests look for it); None when none holds it."""
    candidates = [Path(given)] if given else []
    if os.environ.get("EXTERNAL_DATA_DIR"):
        candidates.append(Path(os.environ["EXTERNAL_DATA_DIR"]))
    candidates += [ROOT / "shared" / "external-data", ROOT.parent / "shared" / "external-data"]
    candidates += [ROOT.parent.parent / "shared" / "external-data"]  # a worktree under <repo>/../wt/
    return next((folder for folder in candidates if (folder / FED_FILE).is_file()), None)


def bench_decided(folder: Path, seeds: int) -> list[Metric]:
    metrics: list[Metric] = []
    for name, (kind, raters, loaded) in data_sets(folder).items():
        say(f"{name}: {len(loaded.panels)} items ({loaded.skipped} left out), {raters} raters, {seeds} seeds")
        figures = summary(
            [replay(loaded.panels, kind=kind, raters=raters, seed=seed) for seed in range(seeds)]
        )
        metrics += [
            Metric(f"{PREFIX}{name}.items", figures["items"], "items"),
            Metric(f"{PREFIX}{name}.saved_share", 100 * figures["saved_share"], "% of ratings"),
            Metric(f"{PREFIX}{name}.saved_share_min", 100 * figures["saved_share_min"], "% (lowest seed)"),
            Metric(f"{PREFIX}{name}.saved_share_max", 100 * figures["saved_share_max"], "% (highest seed)"),
            Metric(f"{PREFIX}{name}.decided_items", figures["decided_items"], "items per seed"),
            Metric(f"{PREFIX}{name}.labels_differ", figures["differ"], "items", "= 0"),
        ]
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    parser.add_argument("--seeds", type=int, default=20, help="random rater orders per data set")
    parser.add_argument("--data", help="folder of fed_data.json and ConvAbuseEMNLPtest.csv")
    args, _ = parser.parse_known_args(argv)
    if part_skipped(args.parts, PART, "decided"):
        return 0
    folder = external_data(args.data)
    if folder is None:
        say(
            "decided benchmark skipped: the third-party data (shared/external-data/fed_data.json) is not here"
        )
        return 0
    metrics = bench_decided(folder, args.seeds)
    finish(metrics, replace=[PREFIX])
    return 0 if all(metric.ok() is not False for metric in metrics) else 1


if __name__ == "__main__":
    sys.exit(main())
