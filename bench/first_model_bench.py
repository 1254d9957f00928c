"""Benchmark of ``make run``'s first model (``make bench``, part ``first_model``; the bench database).

What it measures is what ``make run`` does on a fresh machine: the demo dialogs, the demo evaluation
set (its dialogs held out) and the demo documents (the Wikipedia summaries) are loaded into the bench
database, then ``trainer.services.training_jobs.first_model_ensure`` trains the first model with
its defaults (``FIRST_MODEL_STEPS``, ``FIRST_MODEL_DOCUMENTS``, ``FIRST_MODEL_VOCAB_SIZE``), in
the foreground, on the demo dialogs of purpose ``pretrain`` only (other
benchmarks leave dialogs of their own in this database). Files go to var/bench/first-model/ (its
own ARTIFACTS_DIR: the search index and model of ``make run`` under var/ are not touched), removed
at the end.

Figures: the minutes it took (the dataset export and tokenizer, training, the evaluation after),
the job's tokens/s, its validation loss and its held-out response ranking as recorded in the model
version's metrics: Hits@1 of 20 on up to 150 turns of its validation split that its training split
does not hold too (101 turns of the demo's distinct conversations), the true next turn among 19
others from other dialogs, by mean token log-likelihood; chance 5 %, goal ≥ 65 % (measured: at
chance, see the README); beside it the same draws ranked with no model, by the words a candidate
shares with its context (``word_overlap_hits``), the yardstick; and the model's answers to a few
greetings, printed. The machine's CPU taken by other processes meanwhile is reported (above 10 %,
the minutes are disturbed; the other figures do not depend on the clock).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench.cpu import machine_busy_seconds, self_seconds  # noqa: E402
from bench.report import (  # noqa: E402
    ROOT,
    Metric,
    bench_database_refusal,
    finish,
    part_skipped,
    say,
)

PART = "first_model"
PREFIX = "first_model."
WORK_DIR = ROOT / "var" / "bench" / "first-model"
GREETINGS = ("Hi!", "Hello, how are you?", "Good morning.", "What do you like to do?")
WORDS = re.compile(r"[a-z']+")


def word_overlap_hits(job: object) -> float | None:
    """Hits@1 of a ranker with no model on the job's held-out turns and draws: a candidate scores
    the idf-weighted words it shares with the context, over the square root of its distinct words
    (idf over the training split's dialog turns). What a model that only matched words would rank:
    the reference a language model's figure is read against, beside chance."""
    from trainer import hits, records
    from trainer.services import training_jobs

    documents: list[set[str]] = []
    for dataset in job.datasets.all():  # type: ignore[attr-defined]
        for row in records.read_rows(dataset.path, "train", ("kind", "context", "response")):
            if row["kind"] == "generative":
                texts = [turn["text"] for turn in row["context"]] + [row["response"]]
                documents.append({w for text in texts for w in WORDS.findall(text.lower())})
    frequency: dict[str, int] = {}
    for words in documents:
        for word in words:
            frequency[word] = frequency.get(word, 0) + 1

    def idf(word: str) -> float:
        return math.log((len(documents) + 1) / (frequency.get(word, 0) + 1))

    def score(pairs: list[tuple[hits.Turns, str]]) -> list[float]:
        out = []
        for context, response in pairs:
            said = {w for _, text in context for w in WORDS.findall(text.lower())}
            words = set(WORDS.findall(response.lower()))
            out.append(sum(idf(w) for w in words & said) / math.sqrt(1 + len(words)))
        return out

    cases = training_jobs.ranking_cases(job)  # type: ignore[arg-type]
    return hits.hits_at_1(cases, score, seed_key=hits.HELD_OUT_SEED)["hits_at_1"]


def bench_first_model() -> list[Metric]:
    from trainer import inference
    from trainer.services import training_jobs

    for command in ("load_demo_dialogs", "load_demo_evaluation_set", "load_demo_documents"):
        call_command(command, stdout=io.StringIO())
    started, busy, own = time.monotonic(), machine_busy_seconds(), self_seconds()
    version = training_jobs.first_model_ensure(purposes=["pretrain"], force=True, say=say)
    seconds = time.monotonic() - started
    others = max(0.0, (machine_busy_seconds() - busy) - (self_seconds() - own))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    final = version.metrics.get("final") or {}
    job = version.job
    assert job is not None
    scorer = inference.scorer_for(version)
    for greeting in GREETINGS:
        answer = scorer.respond([("user", greeting)], inference.sampling_settings(), seed=0)
        say(f"  {greeting!r} → {answer.text!r}")
    dataset = job.datasets.get()
    train = dataset.counts["splits"]["train"]
    return [
        Metric(f"{PREFIX}hits_at_1", final.get("hits_at_1"), "share", "≥ 0.65"),
        Metric(f"{PREFIX}word_overlap_hits_at_1", word_overlap_hits(job), "share (no model; reference)"),
        Metric(f"{PREFIX}hits_contexts", final.get("hits_contexts"), "held-out turns"),
        Metric(f"{PREFIX}hits_candidates", final.get("hits_candidates"), "candidates"),
        Metric(f"{PREFIX}validation_loss", final.get("validation_loss"), "nats/token"),
        Metric(f"{PREFIX}minutes", round(seconds / 60, 2), "min"),
        Metric(
            f"{PREFIX}tokens_per_second", version.metrics.get("tokens_per_second"), "tokens/s (last report)"
        ),
        Metric(f"{PREFIX}steps", job.total_steps, "steps"),
        Metric(f"{PREFIX}dialog_examples", train.get("generative", 0), "train examples"),
        Metric(f"{PREFIX}document_examples", train.get("document", 0), "train examples (passages)"),
        Metric(f"{PREFIX}parameters", version.parameters, "parameters"),
        Metric(f"{PREFIX}others_cpu_share", round(others / max(seconds * cpus, 1e-9), 3), "share", "≤ 0.1"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    args, _others = parser.parse_known_args(argv)
    if part_skipped(args.parts, PART, "first-model"):
        return 0
    refusal = bench_database_refusal()
    if refusal:
        print(f"refusing to run: {refusal}")
        return 2
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    settings.ARTIFACTS_DIR = WORK_DIR
    try:
        metrics = bench_first_model()
    finally:
        shutil.rmtree(WORK_DIR, ignore_errors=True)
    finish(metrics, replace=[PREFIX])
    return 0


if __name__ == "__main__":
    sys.exit(main())
