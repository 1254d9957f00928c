"""The automatic metrics of an evaluation (``trainer.Evaluation.metrics``: what the worker measured
without raters) and how well each tracked the human metric it stands for, across model versions
(Spearman's rho and Pearson's r). Pure: no Django; ``trainer.evaluation_report`` puts them beside
the human metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from annotation.statistics import Interval

__all__ = [
    "CORRELATIONS",
    "MIN_VERSIONS_FOR_CORRELATION",
    "Automatic",
    "Correlation",
    "automatic_metrics",
    "correlations",
    "pearson",
    "spearman",
]

MIN_VERSIONS_FOR_CORRELATION = 3


@dataclass(frozen=True)
class Automatic:
    """What the evaluation worker measured without raters (``Evaluation.metrics``)."""

    discriminators: dict[str, float]  # attribute (SENSIBLE, ...) -> mean predicted probability
    validation_loss: float | None
    hits_at_1: float | None
    hits_candidates: int | None
    hits_contexts: int | None
    fallbacks: int | None
    contexts_per_second: float | None


@dataclass(frozen=True)
class Correlation:
    """How well an automatic metric tracked a human one across model versions."""

    automatic: str  # key
    label: str  # "P(SENSIBLE)"
    human: str  # metric key
    expected: int  # +1: should rise with the human metric; -1: should fall (a loss)
    versions: int  # versions with both numbers
    spearman: float | None
    pearson: float | None
    note: str  # why a coefficient is missing


# --- reading Evaluation.metrics -------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def automatic_metrics(metrics: Mapping[str, Any] | None) -> Automatic | None:
    """``Evaluation.metrics`` read defensively: what is missing or not a finite number is ``None``."""
    if not isinstance(metrics, Mapping) or not metrics:
        return None
    discriminators = metrics.get("discriminators")
    means = {
        str(name).upper(): number
        for name, value in (discriminators.items() if isinstance(discriminators, Mapping) else ())
        if (number := _number(value)) is not None
    }
    return Automatic(
        discriminators=means,
        validation_loss=_number(metrics.get("validation_loss")),
        hits_at_1=_number(metrics.get("hits_at_1")),
        hits_candidates=_count(metrics.get("hits_candidates")),
        hits_contexts=_count(metrics.get("hits_contexts")),
        fallbacks=_count(metrics.get("fallbacks")),
        contexts_per_second=_number(metrics.get("contexts_per_second")),
    )


def _discriminator(name: str, *, inverted: bool = False) -> Callable[[Automatic], float | None]:
    def read(automatic: Automatic) -> float | None:
        value = automatic.discriminators.get(name)
        return None if value is None else (1 - value if inverted else value)

    return read


# (key, label, human metric, expected sign, how to read it from Automatic)
CORRELATIONS: tuple[tuple[str, str, str, int, Callable[[Automatic], float | None]], ...] = (
    ("p_sensible", "P(SENSIBLE)", "sensibleness", 1, _discriminator("SENSIBLE")),
    ("p_specific", "P(SPECIFIC)", "specificity", 1, _discriminator("SPECIFIC")),
    ("p_interesting", "P(INTERESTING)", "interestingness", 1, _discriminator("INTERESTING")),
    ("p_safe", "1 − P(UNSAFE)", "safety", 1, _discriminator("UNSAFE", inverted=True)),
    ("validation_loss", "validation loss", "ssi", -1, lambda a: a.validation_loss),
    ("hits_at_1", "Hits@1 of 20", "ssi", 1, lambda a: a.hits_at_1),
)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r of two equally long sequences; ``None`` for fewer than 2 or a constant one."""
    if len(xs) != len(ys):
        raise ValueError("pearson: the sequences differ in length")
    n = len(xs)
    if n < 2:
        return None
    mean_x, mean_y = math.fsum(xs) / n, math.fsum(ys) / n
    dx = [x - mean_x for x in xs]
    dy = [y - mean_y for y in ys]
    sxx, syy = math.fsum(d * d for d in dx), math.fsum(d * d for d in dy)
    if sxx <= 0 or syy <= 0:
        return None
    r = math.fsum(a * b for a, b in zip(dx, dy, strict=True)) / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, r))


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties given the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks (ties averaged)."""
    return pearson(_ranks(xs), _ranks(ys))


def correlations(
    versions: Sequence[tuple[Automatic | None, Mapping[str, Interval | None]]],
) -> tuple[Correlation, ...]:
    """Per entry of ``CORRELATIONS``, across the model versions given as (automatic metrics, human
    metric -> interval): the versions with both numbers, and the correlation of the automatic
    number with the human estimate; ``None`` with a note when fewer than
    ``MIN_VERSIONS_FOR_CORRELATION`` versions have both, or when either is constant."""
    found = []
    for key, label, human, expected, read in CORRELATIONS:
        pairs = []
        for automatic, cells in versions:
            cell = cells.get(human)
            value = read(automatic) if automatic is not None else None
            if cell is not None and value is not None:
                pairs.append((value, cell.estimate))
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        enough = len(pairs) >= MIN_VERSIONS_FOR_CORRELATION
        rho, r = (spearman(xs, ys), pearson(xs, ys)) if enough else (None, None)
        note = (
            f"needs ≥ {MIN_VERSIONS_FOR_CORRELATION} versions"
            if not enough
            else "constant across versions"
            if r is None
            else ""
        )
        found.append(Correlation(key, label, human, expected, len(pairs), rho, r, note))
    return tuple(found)
