"""Benchmark of full-text search (``make bench``, after the annotation benchmark; part ``search``).

``toolset.search.SearchIndex`` is measured directly, without a database: synthetic English-like
documents (a vocabulary of real stopwords and 50k generated words, drawn with a Zipf-like
distribution; bodies of 60-200 words, titles of 2-5, unique URLs; seeded, so runs repeat) are
indexed with ``rebuild`` into throw-away folders under var/bench/, one of 10k and one of 1M
documents (documents per second of ``rebuild``, the documents made beforehand in memory). Then
queries of 1-3 words from the same distribution go through ``search`` (BM25, 10 hits with
snippets, as the application asks), alternating between the sizes after a warm-up: p50/p99 per
size and the 1M/10k ratio of p50 (goal ≤ 3: the cost must not grow with the corpus).

The table is printed and the figures merged into var/bench/results.json. Arguments this script
does not know (the annotation benchmark's) are ignored, and so are parts other than ``search``.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import ROOT, Metric, finish, percentile, say
from toolset.search import SearchIndex

PART = "search"
PREFIX = "search."
SIZES = {"10k": 10_000, "1m": 1_000_000}
VOCABULARY = 50_000
ZIPF_S = 1.07
SEED = 20261128
WORK_DIR = ROOT / "var" / "bench"
_STOPWORD_TEXT = (
    "the of and to a in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more can who its out into other than some what about also may only these two time first them "
    "then after over new most such"
)
STOPWORDS = _STOPWORD_TEXT.split()
_CONSONANTS = [*"bcdfghklmnprstvz", "ch", "sh", "th", "st", "tr", "br", "pl", "gr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]


@dataclass(frozen=True)
class Document:
    url: str
    title: str
    body: str


class Corpus:
    """Words by rank (stopwords first) and their Zipf-like cumulative probabilities."""

    def __init__(self, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        words = list(STOPWORDS)
        seen = set(words)
        while len(words) < len(STOPWORDS) + VOCABULARY:
            syllables = int(rng.integers(2, 5))
            word = "".join(
                _CONSONANTS[int(rng.integers(len(_CONSONANTS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))]
                for _ in range(syllables)
            )
            if rng.random() < 0.4:
                word += _CONSONANTS[int(rng.integers(len(_CONSONANTS)))]
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        weights = 1.0 / np.arange(1, len(words) + 1) ** ZIPF_S
        self.cumulative = np.cumsum(weights / weights.sum())

    def draw(self, rng: np.random.Generator, count: int) -> list[str]:
        ranks = np.searchsorted(self.cumulative, rng.random(count), side="right")
        ranks = np.minimum(ranks, len(self.words) - 1)
        return [self.words[rank] for rank in ranks.tolist()]

    def documents(self, count: int, seed: int, timing: list[float]) -> Iterator[Document]:
        """``count`` documents, made in batches; the seconds spent making them are added to
        ``timing[0]``."""
        rng = np.random.default_rng(seed)
        batch = 2_000
        for start in range(0, count, batch):
            started = time.perf_counter()
            size = min(batch, count - start)
            body_lengths = rng.integers(60, 201, size).tolist()
            title_lengths = rng.integers(2, 6, size).tolist()
            words = self.draw(rng, sum(body_lengths) + sum(title_lengths))
            made = []
            at = 0
            for offset in range(size):
                title = words[at : at + title_lengths[offset]]
                at += title_lengths[offset]
                body = words[at : at + body_lengths[offset]]
                at += body_lengths[offset]
                made.append(
                    Document(
                        url=f"https://bench.example/doc/{start + offset}",
                        title=" ".join(title).capitalize(),
                        body=_sentences(body),
                    )
                )
            timing[0] += time.perf_counter() - started
            yield from made


def _sentences(words: list[str]) -> str:
    """Words as sentences of about 12 words, capitalised and ending with a full stop."""
    parts = []
    for start in range(0, len(words), 12):
        sentence = " ".join(words[start : start + 12])
        parts.append(sentence[:1].upper() + sentence[1:] + ".")
    return " ".join(parts)


def build(corpus: Corpus, label: str, count: int, folder: Path) -> tuple[SearchIndex, float]:
    """The index of ``count`` documents in ``folder``, and the seconds ``rebuild`` took. The
    documents are made first, in memory (tantivy indexes on a thread of its own, so the time of
    making them could not be told apart from indexing)."""
    making = [0.0]
    documents = list(corpus.documents(count, seed=SEED + count, timing=making))
    index = SearchIndex(folder)
    gc.collect()
    started = time.perf_counter()
    indexed = index.rebuild(documents)
    seconds = time.perf_counter() - started
    del documents
    if indexed != count or index.count() != count:
        raise RuntimeError(f"{label}: rebuild indexed {indexed}, the index holds {index.count()}")
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    say(
        f"  {label}: {count:,} documents made in {making[0]:.1f} s, rebuild took {seconds:.1f} s: "
        f"{count / seconds:,.0f} documents/s, {size / 1e6:,.0f} MB on disk"
    )
    return index, seconds


def bench_search(sizes: dict[str, int], queries: int, warmup: int) -> list[Metric]:
    corpus = Corpus()
    say(
        f"search: {len(corpus.words):,} words (Zipf s={ZIPF_S}), indexes of "
        + ", ".join(f"{count:,}" for count in sizes.values())
        + " documents"
    )
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="search-", dir=WORK_DIR))
    metrics: list[Metric] = []
    try:
        indexes: dict[str, SearchIndex] = {}
        built = {}
        for label, count in sizes.items():
            indexes[label], seconds = build(corpus, label, count, folder / label)
            built[label] = (count, seconds)
            metrics.append(Metric(f"{PREFIX}{label}.index_build_s", seconds, "s"))
        rng = np.random.default_rng(SEED)
        texts = [" ".join(corpus.draw(rng, int(rng.integers(1, 4)))) for _ in range(warmup + queries)]
        say(f"  {warmup} warm-up queries, then {queries} per size, alternating; e.g. {texts[-3:]}")
        timings: dict[str, list[float]] = {label: [] for label in sizes}
        hits: dict[str, int] = dict.fromkeys(sizes, 0)
        gc.collect()
        for number, text in enumerate(texts):
            for label, index in indexes.items():
                started = time.perf_counter()
                found = index.search(text)
                took = time.perf_counter() - started
                if number >= warmup:
                    timings[label].append(took)
                    hits[label] += len(found)
        stopwords = set(STOPWORDS)
        common = [any(word in stopwords for word in text.split()) for text in texts[warmup:]]
        figures = {}
        for label, seconds in timings.items():
            figures[label] = {q: percentile(seconds, q) * 1000 for q in (50, 99)}
            say(
                f"  {label}: p50 {figures[label][50]:.2f} ms, p99 {figures[label][99]:.2f} ms, "
                f"max {max(seconds) * 1000:.2f} ms, {hits[label] / len(seconds):.1f} hits a query"
            )
            for q, value in figures[label].items():
                metrics.append(Metric(f"{PREFIX}{label}.p{q}_ms", value, "ms"))
            # Common words match most documents: the queries with and without one, apart.
            for kind, wanted in (("with_stopword", True), ("without_stopword", False)):
                chosen = [took for took, has in zip(seconds, common, strict=True) if has is wanted]
                if chosen:
                    value = percentile(chosen, 50) * 1000
                    metrics.append(Metric(f"{PREFIX}{label}.p50_ms_{kind}", value, "ms"))
                    say(f"    {kind.replace('_', ' ')}: p50 {value:.2f} ms over {len(chosen)} queries")
        labels = list(sizes)
        small, big = labels[0], labels[-1]
        if small != big:
            metrics.append(
                Metric(f"{PREFIX}p50_ratio_{big}_{small}", figures[big][50] / figures[small][50], "x", "≤ 3")
            )
            metrics.append(
                Metric(f"{PREFIX}p99_ratio_{big}_{small}", figures[big][99] / figures[small][99], "x")
            )
        count, seconds = built[big]
        metrics.append(Metric(f"{PREFIX}index_build_docs_per_s", count / seconds, "1/s"))
        metrics.append(Metric(f"{PREFIX}largest_index_docs", count, "documents"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        say(f"  removed {folder.relative_to(ROOT)}")
    return metrics


def _size(text: str) -> tuple[str, int]:
    """``10k``, ``1m``, ``250k`` or ``5000``: the label and the number of documents."""
    label = text.strip().lower()
    multiplier = {"k": 1_000, "m": 1_000_000}.get(label[-1:], 1)
    digits = label[:-1] if multiplier > 1 else label
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size like 10k, 1m or 5000")
    return label, int(digits) * multiplier


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    parser.add_argument("--queries", type=int, default=300, help="queries measured per size")
    parser.add_argument("--warmup-queries", type=int, default=50)
    parser.add_argument(
        "--search-sizes",
        default=",".join(SIZES),
        help="comma-separated index sizes, smallest first (default 10k,1m)",
    )
    args, _others = parser.parse_known_args(argv)  # the annotation benchmark's arguments
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if PART not in parts:
        say(f"search benchmark skipped (--parts {args.parts} does not name {PART!r})")
        return 0
    sizes = dict(_size(text) for text in args.search_sizes.split(",") if text.strip())

    started = time.monotonic()
    metrics = bench_search(sizes, args.queries, args.warmup_queries)
    metrics.append(Metric("search_bench.wall_s", time.monotonic() - started, "s"))
    finish(metrics, replace=[PREFIX, "search_bench."])
    return 0


if __name__ == "__main__":
    sys.exit(main())
