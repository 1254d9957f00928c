"""Benchmark of evaluating a model version (``make bench``, part ``evaluate``; the bench database).

A set of ``--evaluate-contexts`` contexts (1,000) is answered by a model of the default size (the
architecture of ``make run``'s first model: ``GroundworkConfig``'s sizes, a tokenizer trained on
the demo conversations with a vocabulary of at most 8,192), freshly initialised with a fixed seed
and saved as a model version (the speed does not depend on the weights). The contexts are those of
the demo conversations (chatterbot-corpus, what ``make run``'s demo set is cut from: every model
turn after a user turn gives the turns before it; 8 tokens at the median, about 260 at most), in
a seeded order. Every answer is made exactly as in production, end to end through
``trainer.services.evaluation_runs.evaluation_run`` (sample-and-rank with the chat settings: 16
candidates, top-k 40, up to 48 new tokens; each answer stored with its 16 candidates):

- **batched**: the whole set, ``EVALUATION_BATCH_CONTEXTS`` contexts per model call;
- **one at a time**: ``batch_contexts=1``, what answering the set as chats would cost, on an
  evenly spread sample of ``--evaluate-single`` contexts of the same set (100: the rate per
  context is what is compared; ``--evaluate-single 1000`` answers the whole set this way too).

The figure of each is the evaluation's own ``contexts_per_second`` (answering and storing; loading
the model and the metrics after are not counted), and their ratio (goal ≥ 3). A random model
seldom ends a response, so nearly every candidate runs to the 48-token limit either way. The
contexts carry no reference, so no Hits@1 is computed. The model files live in var/bench/ and are
removed at the end; the rows stay in the bench database (dropped by scripts/bench.sh).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
django.setup()

import torch  # noqa: E402
from django.conf import settings  # noqa: E402

from bench.report import (  # noqa: E402
    ROOT,
    Metric,
    bench_database_refusal,
    finish,
    part_skipped,
    say,
)

PART = "evaluate"
PREFIX = "evaluate."
SEED = 20261205
WORK_DIR = ROOT / "var" / "bench" / "evaluate"


def _contexts(count: int) -> list[dict[str, Any]]:
    """``count`` contexts of the demo conversations (what ``make run``'s demo set is cut from):
    every model turn after a user turn gives one, the turns before it; seeded order, repeated
    when ``count`` is larger than what there is."""
    from dialogs import demo

    every = []
    for record in demo.chatterbot_records():
        turns = [{"speaker": t.speaker, "text": t.text} for t in record.turns]
        every += [turns[:i] for i in range(1, len(turns)) if turns[i]["speaker"] == "model"]
    random.Random(SEED).shuffle(every)  # noqa: S311 - an order, not a secret
    return [{"id": f"b{i}", "purpose": "quality", "context": every[i % len(every)]} for i in range(count)]


def _texts() -> list[str]:
    """What the tokenizer is trained on: the demo conversations, as make run's first model's."""
    from dialogs import demo

    return [turn.text for record in demo.chatterbot_records() for turn in record.turns]


def _model_version(name: str, model: dict[str, int] | None) -> Any:
    """A default-size model (``model`` overrides sizes, for the tests), saved under
    ARTIFACTS_DIR, and two versions of it: batched and one at a time."""
    from trainer import tokenizer as tokenizers
    from trainer.modeling import GroundworkConfig, model_init
    from trainer.models import ModelVersion
    from trainer.services.dataset_builds import tokenizer_sha256

    directory = settings.ARTIFACTS_DIR / "models" / name
    tokenizer = tokenizers.train_tokenizer(_texts(), vocab_size=8192)
    config = GroundworkConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **(model or {}),
    )
    weights = model_init(config, seed=SEED)
    weights.save_pretrained(str(directory))
    tokenizers.save(tokenizer, directory)
    parameters = sum(p.numel() for p in weights.parameters())
    common = {
        "directory": f"models/{name}",
        "config": config.to_dict(),
        "parameters": parameters,
        "tokenizer_sha256": tokenizer_sha256(directory),
    }
    return [ModelVersion.objects.create(name=f"{name}-{way}", **common) for way in ("batched", "single")]


def bench_evaluate(contexts: int, single: int, model: dict[str, int] | None = None) -> list[Metric]:
    """Answer ``contexts`` contexts batched and an even sample of ``single`` of them one at a
    time; the figures."""
    from dialogs.evaluation_sets import evaluation_set_import, parse_objects
    from trainer.services import evaluation_runs, evaluations

    name = f"bench-evaluate-{os.getpid()}"
    every = _contexts(contexts)
    step = max(1, contexts // max(1, single))
    sample = every[::step][:single]
    whole = evaluation_set_import(name=name, records=parse_objects(every)).evaluation_set
    spread = evaluation_set_import(name=f"{name}-sample", records=parse_objects(sample)).evaluation_set
    batched_version, single_version = _model_version(name, model)
    say(f"model: {batched_version.parameters:,} parameters; set: {contexts} contexts, sample {len(sample)}")

    def run(evaluation_set: Any, version: Any, batch_contexts: int | None) -> tuple[Any, float]:
        evaluation = evaluations.evaluation_request(
            evaluation_set=evaluation_set, model_version=version, enqueue=False
        )
        started = time.perf_counter()
        evaluation = evaluation_runs.evaluation_run(
            evaluation_id=evaluation.pk, batch_contexts=batch_contexts
        )
        assert evaluation.status == "done", evaluation.error
        return evaluation, time.perf_counter() - started

    batched, batched_s = run(whole, batched_version, None)
    batched_rate = batched.metrics["contexts_per_second"]
    say(f"batched: {batched_rate:.2f} contexts/s ({batched_s:.0f} s for {contexts})")
    alone, alone_s = run(spread, single_version, 1)
    alone_rate = alone.metrics["contexts_per_second"]
    say(f"one at a time: {alone_rate:.2f} contexts/s ({alone_s:.0f} s for {len(sample)})")
    return [
        Metric(f"{PREFIX}batched_contexts_per_second", batched_rate, "contexts/s"),
        Metric(f"{PREFIX}one_at_a_time_contexts_per_second", alone_rate, "contexts/s"),
        Metric(f"{PREFIX}speedup", batched_rate / alone_rate, "x", "≥ 3"),
        Metric(f"{PREFIX}batched_set_s", batched_s, "s"),
        Metric(f"{PREFIX}contexts", contexts, "contexts"),
        Metric(f"{PREFIX}one_at_a_time_contexts", len(sample), "contexts"),
        Metric(f"{PREFIX}batch_contexts", settings.EVALUATION_BATCH_CONTEXTS, "contexts"),
        Metric(f"{PREFIX}model_parameters", batched_version.parameters, "parameters"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    parser.add_argument("--evaluate-contexts", type=int, default=1000, help="contexts answered batched")
    parser.add_argument(
        "--evaluate-single", type=int, default=100, help="of them, answered one at a time (evenly spread)"
    )
    args, _others = parser.parse_known_args(argv)
    if part_skipped(args.parts, PART, "evaluation"):
        return 0
    refusal = bench_database_refusal()
    if refusal:
        print(f"refusing to run: {refusal}")
        return 2
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    settings.ARTIFACTS_DIR = WORK_DIR
    try:
        metrics = bench_evaluate(args.evaluate_contexts, args.evaluate_single)
    finally:
        shutil.rmtree(WORK_DIR, ignore_errors=True)
    finish(metrics, replace=[PREFIX])
    return 0


if __name__ == "__main__":
    sys.exit(main())
