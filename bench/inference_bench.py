"""Benchmark of sample-and-rank (``make bench``, part ``inference``; no database).

The model is the default size of ``GroundworkConfig`` (what ``make run`` trains), randomly
initialised with a fixed seed, on 2 threads; the tokenizer is a byte-level BPE trained on
generated words. A random model seldom ends a response, so every candidate runs to its token
limit: the turn figure is the slow case.

- **scoring**: P(attribute) of 16 candidates × 4 attributes (SENSIBLE, SPECIFIC, INTERESTING,
  UNSAFE) after a 128-token context, responses of 16-32 tokens. With cache reuse
  (``Scorer.score_with_cache``: the sampling cache read, one one-token forward of the 16 rows per
  attribute) against the fair baseline without it (``Scorer.score_by_reencoding``): each of
  the 16 sequences (context + response) encoded once, in one right-padded batch of hidden states
  (no logits), then the same four one-token forwards on that encoding's cache. So the baseline
  pays exactly what cache reuse saves, the encoding, and nothing it would not need: no sequence
  is encoded once per attribute (64 encodings, with 8192 logits at every position, as this
  benchmark's baseline did until issue 14: 36× then). Both give the same probabilities (checked
  first); the medians of ``--repeats`` runs and their ratio (goal ≥ 10).
- **turn**: one model turn end to end (``Scorer.respond``: sample 16 with top-k 40 up to 48 new
  tokens, score with the cache, rank), median of ``--turns`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch

from bench.report import Metric, finish, part_skipped, say
from trainer import sampling
from trainer import tokenizer as tokenizers
from trainer.modeling import GroundworkConfig, GroundworkForCausalLM

PART = "inference"
PREFIX = "inference."
SEED = 20261128


def _setup() -> sampling.Scorer:
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    words = [f"w{i}x{i * 7 % 13}" for i in range(3000)]
    tokenizer = tokenizers.train_tokenizer(
        [" ".join(words[i : i + 40]) for i in range(0, 3000, 5)], vocab_size=8192
    )
    config = GroundworkConfig(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return sampling.Scorer(GroundworkForCausalLM(config), tokenizer, discriminators=True)


def _median_ms(run: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def bench_inference(repeats: int, turns: int) -> list[Metric]:
    scorer = _setup()
    generator = torch.Generator().manual_seed(SEED)
    sentinel = tokenizers.special_id(scorer.tokenizer, tokenizers.SENTINEL)
    prompt = [*torch.randint(300, 8000, (127,), generator=generator).tolist(), sentinel]
    candidates, cache, prompt_length = scorer.sample(prompt, sampling.Settings(max_new_tokens=32), generator)
    lengths = [16 + i for i in range(16)]  # 16..31 tokens: candidates end at different places
    responses = [c.ids[:n] for c, n in zip(candidates, lengths, strict=True)]
    attributes = sampling.RANKED_ATTRIBUTES

    reused = scorer.score_with_cache(cache, prompt_length, lengths, attributes)
    fresh = scorer.score_by_reencoding(prompt, responses, attributes)
    worst = max(abs(a - b) for name in attributes for a, b in zip(reused[name], fresh[name], strict=True))
    say(f"scoring: cache and re-encoding agree to {worst:.1e}")
    with_cache = _median_ms(
        lambda: scorer.score_with_cache(cache, prompt_length, lengths, attributes), repeats
    )
    reencoding = _median_ms(lambda: scorer.score_by_reencoding(prompt, responses, attributes), repeats)
    say(f"scoring 16x4: {with_cache:.1f} ms with the cache, {reencoding:.1f} ms encoding each sequence once")

    context = [("user", " ".join(f"w{i}x{i * 7 % 13}" for i in range(40)))]
    turn = _median_ms(lambda: scorer.respond(context, sampling.Settings()), turns)
    say(f"one turn (sample 16 x 48 tokens, score, rank): {turn:.0f} ms")
    return [
        Metric(f"{PREFIX}scoring_16x4_cache_ms", with_cache, "ms"),
        Metric(f"{PREFIX}scoring_16x4_reencode_once_ms", reencoding, "ms"),
        Metric(f"{PREFIX}scoring_speedup", reencoding / with_cache, "x", "≥ 10"),
        Metric(f"{PREFIX}scoring_max_difference", worst, "probability"),
        Metric(f"{PREFIX}turn_ms", turn, "ms"),
        Metric(f"{PREFIX}model_parameters", sum(p.numel() for p in scorer.model.parameters()), "parameters"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    parser.add_argument("--repeats", type=int, default=20, help="scoring runs measured (median)")
    parser.add_argument("--turns", type=int, default=3, help="model turns measured (median)")
    args, _others = parser.parse_known_args(argv)
    if part_skipped(args.parts, PART, "inference"):
        return 0
    metrics = bench_inference(args.repeats, args.turns)
    finish(metrics, replace=[PREFIX])
    return 0


if __name__ == "__main__":
    sys.exit(main())
