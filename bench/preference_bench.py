"""Benchmark of the preference-data export (``make bench``, part ``preference``; the bench database):
crowd work seeded in bulk at two sizes, N and 4N (N is ``--preference-scale`` units, default
``SCALE``: about 10,000 pairs), each made into a ``preference`` dataset by
``trainer.services.dataset_builds.dataset_build``, what the worker runs (the consensus brought up to
date, the units of ``trainer.preference_sources`` streamed into JSONL and Parquet, the manifest).
Each build runs in a forked process whose resident memory is read before it and at its peak
(VmHWM, reset when the build starts): the growth at 4N over the growth at N says whether the build
streams (goal ≤ 1.5; a build that held its rows would be near 4). Figures: pairs by source as the
manifest counts them, rows (pairs + KTO rows) per second and seconds of each build, the size of
its files, and the baseline: N's rating campaigns exported as a ``quality_safety`` dataset (the
export a user would otherwise run; it renders every row with the tokenizer), as a ratio of rows
per second. Then the N dataset's files are loaded with ``datasets`` (``load_dataset("json")`` and
``("parquet")``, pairs and KTO rows, both splits) and their rows checked against the manifest.

One unit of crowd work, all of it complete, answers drawn by a hash in SQL against a hidden truth:

- a groundedness rewrite campaign of ``REWRITE_ITEMS`` model turns (3 context turns each), 3 raters:
  on 85 % of the items every rater finds external claims not known to be true and writes a
  researched rewrite; on the others only one rater does, so the consensus says no research is
  needed and that rewrite is left out (counted). Each turn has ``CANDIDATES`` sampled candidates,
  half of them right, labelled correct or incorrect by the raters (right 85 % of the time; the
  third rater leaves 40 % unlabelled, so some candidates tie);
- an SSI campaign (5 raters, the cascade) and a safety campaign (3 raters, one objective) over the
  same ``RATED_PROMPTS`` x ``RESPONSES`` responses: each prompt (3 context turns) answered by
  ``RESPONSES`` model turns in dialogs of their own, so a prompt's responses are compared;
- a side-by-side campaign (3 raters) over an evaluation set of ``PAIRWISE_CONTEXTS`` contexts
  answered by two responders; one context in 50 was cut from a rewrite dialog, whose items are
  then held out of the dataset (counted).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django

from bench.report import ROOT

# The datasets (and the benchmark's tokenizer) go to a scratch folder of their own, which this
# benchmark removes; the child processes that build read it from the environment too.
ARTIFACTS = ROOT / "var" / "bench" / "preference"
os.environ["ARTIFACTS_DIR"] = str(ARTIFACTS)
# The tokenizer is trained here before the builds are forked: no thread pool across a fork.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
django.setup()

from annotation.models import Campaign, SafetyObjective  # noqa: E402
from bench import sqldata  # noqa: E402
from bench.preference_seed import OBJECTIVE, POOL, SCALE, VALIDATION_PERCENT, Seeded, seed  # noqa: E402
from bench.report import Metric, bench_database_refusal, finish, part_skipped, say  # noqa: E402

PART = "preference"
PREFIX = "preference."


def tokenizer_source(texts: list[str]) -> Any:
    """A model version whose tokenizer renders the ``quality_safety`` baseline (a preference
    dataset saves it beside its files too): trained on the benchmark's texts, no weights."""
    from trainer import tokenizer as tokenizers
    from trainer.models import ModelVersion
    from trainer.services.dataset_builds import tokenizer_sha256

    name = f"bench-preference-{os.getpid()}-tokenizer"
    directory = f"models/{name}"
    saved = tokenizers.save(tokenizers.train_tokenizer(texts, vocab_size=8192), ARTIFACTS / directory)
    return ModelVersion.objects.create(
        name=name, directory=directory, tokenizer_sha256=tokenizer_sha256(saved)
    )


# ------------------------------------------------------------------------------------------- builds


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM); None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def build_child(dataset_id: int) -> dict[str, Any]:
    """Run in a forked process: build the dataset as the worker does; its seconds and memory."""
    import gc

    from trainer.models import DatasetVersion
    from trainer.services import dataset_builds

    gc.collect()
    baseline = _status_kib("VmRSS")
    try:  # VmHWM back to the RSS now (Linux 4.0+): the peak is then the build's own
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    started = time.perf_counter()
    dataset = dataset_builds.dataset_build(dataset_id=dataset_id)
    seconds = time.perf_counter() - started
    if dataset.status != DatasetVersion.Status.READY:
        raise RuntimeError(f"dataset {dataset_id} is {dataset.status}: {dataset.error}")
    peak = _status_kib("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "peak_reset": reset,
        "growth_mib": (peak - (baseline or 0)) / 1024,
    }


def _forked(dataset_id: int) -> dict[str, Any]:
    """``build_child`` in a forked process (fresh memory to measure, the modules already loaded: a
    new interpreter spends 15 s importing them here); its result through a pipe."""
    from django.db import connections

    connections.close_all()  # the child opens its own
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 0
        try:
            payload = json.dumps(build_child(dataset_id))
        except BaseException as exc:  # reported by the parent
            payload = json.dumps({"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})
            code = 1
        with os.fdopen(write, "w") as out:
            out.write(payload)
        connections.close_all()
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        received = pipe.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(received) if received else {"error": f"the build process ended with {status}"}
    if "error" in result:
        raise RuntimeError(f"build of dataset {dataset_id} failed: {result['error']}")
    return result


def _build(kind: str, campaigns: Sequence[Campaign], tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    from trainer.models import DatasetVersion
    from trainer.services import requests

    dataset = requests.dataset_request(
        kind=kind,
        campaigns=campaigns,
        tokenizer_source=tokenizer,
        validation_percent=VALIDATION_PERCENT,
        enqueue=False,
    )
    result = _forked(dataset.pk)
    return DatasetVersion.objects.get(pk=dataset.pk), result


@dataclass
class Built:
    pairs: dict[str, int]
    kto: int
    rows: int
    seconds: float
    rows_per_s: float
    mib: float
    growth_mib: float
    manifest: dict[str, Any]
    path: Path


def build_preference(seeded: Seeded, tokenizer: Any) -> Built:
    dataset, result = _build("preference", seeded.all, tokenizer)
    manifest = json.loads((dataset.path / "manifest.json").read_text())
    pairs = manifest["pairs_by_source"]
    kto = sum(manifest["unpaired_by_source"].values())
    rows = sum(pairs.values()) + kto
    data_bytes = sum(entry["bytes"] for name, entry in dataset.files.items() if name != "manifest.json")
    built = Built(
        pairs=pairs,
        kto=kto,
        rows=rows,
        seconds=result["seconds"],
        rows_per_s=rows / result["seconds"],
        mib=data_bytes / 2**20,
        growth_mib=result["growth_mib"],
        manifest=manifest,
        path=dataset.path,
    )
    skipped = {k: v for k, v in manifest["skipped"].items() if v}
    say(
        f"  {seeded.label} preference: {sum(pairs.values()):,} pairs "
        f"({', '.join(f'{k} {v:,}' for k, v in pairs.items())}) and {kto:,} KTO rows in "
        f"{built.seconds:.1f} s: {built.rows_per_s:,.0f} rows/s; files {built.mib:.1f} MiB; RSS "
        f"{result['baseline_kib'] / 1024:.0f} MiB before, peak {result['peak_kib'] / 1024:.0f} MiB "
        f"(growth {built.growth_mib:.0f} MiB{'' if result['peak_reset'] else ', VmHWM not reset'})"
    )
    say(f"    skipped: {', '.join(f'{k} {v:,}' for k, v in skipped.items())}")
    return built


def build_quality_safety(seeded: Seeded, tokenizer: Any) -> tuple[int, float]:
    """The baseline: the rating campaigns as a ``quality_safety`` dataset; its rows and seconds."""
    dataset, result = _build("quality_safety", [seeded.ssi, seeded.safety], tokenizer)
    rows = sum(sum(split.values()) for split in dataset.counts["splits"].values())
    say(
        f"  {seeded.label} quality_safety (the SSI and safety campaigns): {rows:,} rows in "
        f"{result['seconds']:.1f} s: {rows / result['seconds']:,.0f} rows/s "
        f"(growth {result['growth_mib']:.0f} MiB)"
    )
    return rows, result["seconds"]


def load_check(built: Built) -> tuple[int, int]:
    """Load every file with ``datasets`` (JSON and Parquet, pairs and KTO rows, both splits); the
    rows loaded and how many files' row counts differ from the manifest's."""
    import datasets

    from trainer import records
    from trainer.services.preference_builds import UNPAIRED_PREFIX

    datasets.disable_progress_bars()
    cache = str(built.path.parent / "hf-cache")
    loaded = mismatched = 0
    for prefix, counted in (("", "pairs/"), (UNPAIRED_PREFIX, "kto/")):
        for fmt in ("json", "parquet"):
            files = records.data_files(built.path, fmt, prefix=prefix)
            found = datasets.load_dataset(fmt, data_files=files, cache_dir=cache)
            for split in records.SPLITS:
                expected = sum(v for k, v in built.manifest["counts"][split].items() if k.startswith(counted))
                loaded += found[split].num_rows
                mismatched += int(found[split].num_rows != expected)
    shutil.rmtree(cache, ignore_errors=True)
    say(f"  datasets.load_dataset: {loaded:,} rows from 8 files, {mismatched} differ from the manifest")
    return loaded, mismatched


def bench_preference(scale: float) -> list[Metric]:
    sizes = {"N": scale, "4N": 4 * scale}
    say(
        f"preference: crowd work at N ({scale:g} unit{'s' if scale != 1 else ''}) and 4N, each built as a "
        "preference dataset in a forked process; quality_safety of N's rating campaigns as the baseline"
    )
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    SafetyObjective.objects.get_or_create(slug=OBJECTIVE, defaults={"name": "Harm", "guidance": "Harm."})
    try:
        return _bench(sizes)
    finally:
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        say(f"  removed {ARTIFACTS.relative_to(ROOT)}")


def _bench(sizes: dict[str, float]) -> list[Metric]:
    stamp = str(os.getpid())
    workers = sqldata.create_users(f"bench-preference-{stamp}-", POOL)
    seeded = {label: seed(label, units, workers, stamp) for label, units in sizes.items()}
    sample = [*seeded["N"].ssi.items.order_by("pk")[:2000], *seeded["N"].rewrite.items.order_by("pk")[:2000]]
    texts = [text for item in sample for text in (item.response, *(t["text"] for t in item.context))]
    tokenizer = tokenizer_source(texts)
    built = {label: build_preference(s, tokenizer) for label, s in seeded.items()}
    loaded, mismatched = load_check(built["N"])
    seeding = sum(s.seconds + s.aggregate_s for s in seeded.values())
    small, big = built["N"], built["4N"]
    metrics = [
        *(Metric(f"{PREFIX}4N pairs, {source}", n, "pairs") for source, n in big.pairs.items()),
        Metric(f"{PREFIX}4N KTO rows", big.kto, "rows"),
    ]
    for label, b in built.items():
        metrics += [
            Metric(f"{PREFIX}{label} rows (pairs + KTO)", b.rows, "rows"),
            Metric(f"{PREFIX}{label} build", b.seconds, "s"),
            Metric(f"{PREFIX}{label} rows/s", b.rows_per_s, "rows/s"),
            Metric(f"{PREFIX}{label} files (JSONL + Parquet)", b.mib, "MiB"),
            Metric(f"{PREFIX}{label} peak memory growth", b.growth_mib, "MiB"),
        ]
    metrics.append(
        Metric(f"{PREFIX}peak memory growth 4N / N", big.growth_mib / small.growth_mib, "x", "≤ 1.5")
    )
    rows, seconds = build_quality_safety(seeded["N"], tokenizer)
    metrics += [
        Metric(f"{PREFIX}N quality_safety rows/s (baseline)", rows / seconds, "rows/s"),
        Metric(f"{PREFIX}N rows/s, preference / quality_safety", small.rows_per_s / (rows / seconds), "x"),
    ]
    metrics += [
        Metric(f"{PREFIX}N rows loaded by datasets (JSON + Parquet)", loaded, "rows"),
        Metric(f"{PREFIX}N files whose rows differ from the manifest", mismatched, "files", "= 0"),
        Metric(f"{PREFIX}seeding N + 4N (bulk SQL, consensus)", seeding, "s"),
    ]
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    parser.add_argument(
        "--preference-scale",
        type=float,
        default=SCALE,
        help="units of crowd work at size N (4N is four times it)",
    )
    args, _others = parser.parse_known_args(argv)
    if part_skipped(args.parts, PART, "preference"):
        return 0
    refusal = bench_database_refusal()
    if refusal:
        print(f"refusing to run: {refusal}")
        return 2
    started = time.monotonic()
    metrics = bench_preference(args.preference_scale)
    metrics.append(Metric(f"{PREFIX}part wall time", time.monotonic() - started, "s"))
    finish(metrics, replace=[PREFIX])
    return 0


if __name__ == "__main__":
    sys.exit(main())
