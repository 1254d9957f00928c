"""The report of an evaluation set (issue 15): how crowdworkers rated each model version's answers
and the human baseline's, side by side. Pure: plain inputs in, a ``Report`` out; no Django, no
database (``trainer.evaluation_report_loader`` fills the inputs from the database).

- **Per response** (``response_values``): the consensus labels of one response (attribute -> 0/1,
  from every campaign that rated it) go through ``annotation.rules`` as a set of one item, so each
  metric's value for that response is its rule's rate over that one response: 0 or 1 (SSI: the
  mean of its three labels), or ``None`` where the rule does not count the response (groundedness
  of a response without external claims, citation accuracy of one whose claims are all well known,
  any metric of a campaign that did not rate it). A metric's mean over the contexts with a value is
  therefore exactly the rule's rate over those responses.
- **Per responder and metric** (``Row.cells``): that mean with its 95% percentile bootstrap
  interval over contexts and ``n``, the responses counted. The set's contexts are resampled once
  (``annotation.statistics.ContextResamples``, 2,000 resamples, seed 0) and the same draws serve
  every metric, every responder and every paired difference.
- **Comparisons**: for each chosen pair (a, b), a's mean minus b's per metric on the contexts both
  have a value for, with a paired bootstrap interval (``Difference.excludes_zero`` flags it), and
  a's win rate over b in the side-by-side campaigns.
- **Win rates**: every pair that was compared side by side, ties counted half, Wilson interval.
- **Automatic metrics** (``Automatic``, from ``Evaluation.metrics``): the mean discriminator
  predictions over the version's answers, validation loss, Hits@1 of 20; and **correlations**
  (Spearman and Pearson, across model versions) of each with the human metric it should track.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

from annotation import rules
from annotation.statistics import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    ContextResamples,
    Difference,
    Interval,
    WinRate,
    win_rate,
)
from trainer.charts import grouped_bars
from trainer.evaluation_automatic import Automatic, Correlation, automatic_metrics, correlations

__all__ = [
    "CSV_HEADER",
    "METRICS",
    "Comparison",
    "MetricInfo",
    "PairWinRate",
    "Report",
    "Row",
    "all_pairs",
    "default_pair",
    "evaluation_report",
    "report_chart",
    "report_csv_rows",
    "report_json",
    "response_values",
]

OUTCOMES = ("a", "b", "tie")


@dataclass(frozen=True)
class MetricInfo:
    key: str
    label: str  # the table's column
    short: str  # the chart's group label
    definition: str  # METHOD.md's words


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("sensibleness", "Sensibleness", "Sensible", "makes sense in context (§2; 3 of 5 raters)"),
    MetricInfo("specificity", "Specificity", "Specific", "specific to this context (§2)"),
    MetricInfo("interestingness", "Interestingness", "Interesting", "catches attention, insightful (§2)"),
    MetricInfo("ssi", "SSI", "SSI", "mean of sensibleness, specificity and interestingness (§2)"),
    MetricInfo("safety", "Safety", "Safe", "no objective violated by 2 of 3 raters (§3)"),
    MetricInfo(
        "groundedness",
        "Groundedness",
        "Grounded",
        "supported claims / responses with external-world claims (§4)",
    ),
    MetricInfo(
        "informativeness", "Informativeness", "Informative", "supported external information / all (§4)"
    ),
    MetricInfo(
        "citation_accuracy",
        "Citation accuracy",
        "Citation",
        "cites a source / responses with external claims not all well known (§4)",
    ),
    MetricInfo("helpfulness", "Helpfulness", "Helpful", "correct information the rater finds helpful (§9)"),
    MetricInfo("role_consistency", "Role consistency", "In role", "what an agent in the role would say (§9)"),
)
METRIC_KEYS: tuple[str, ...] = tuple(metric.key for metric in METRICS)

# The attributes the rules read, in a fixed order: a response's values depend on these alone.
_GROUNDEDNESS = ("claims_external", rules.WELL_KNOWN, "factually_correct", "cites_source")
_HELPFUL, _ROLE_CONSISTENT = rules.HELPFULNESS_ATTRIBUTES
_READ = (*rules.SSI_ATTRIBUTES, rules.SAFETY_SCORE, *_GROUNDEDNESS, _HELPFUL, _ROLE_CONSISTENT)
_SSI_METRICS = dict(zip(rules.SSI_ATTRIBUTES, METRIC_KEYS[:3], strict=True))
_values_of: dict[tuple[int | None, ...], dict[str, float | None]] = {}  # the rules' answer per key


def _hard_label(attribute: str, value: Any) -> rules.Label:
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(f"{attribute}: {value!r} is not a 0/1 label")
    return rules.Label(attribute=attribute, label=int(value), yes=0, no=0, maybe=0, yes_fraction=float(value))


def response_values(labels: Mapping[str, int]) -> dict[str, float | None]:
    """Each metric's value for one response from its consensus labels (attribute -> 0/1), by
    ``annotation.rules`` on that one response; ``None`` where the rule does not count it. Labels of
    attributes the rules do not read (safety objectives, ``understandable``) are ignored; a label
    that is not 0/1, or a groundedness response lacking a label its rule needs, is a ``ValueError``
    naming the attribute."""
    key = tuple(labels.get(attribute) for attribute in _READ)
    known = _values_of.get(key)
    if known is not None:
        return dict(known)
    item = {a: _hard_label(a, v) for a, v in zip(_READ, key, strict=True) if v is not None}
    values: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    if all(attribute in item for attribute in rules.SSI_ATTRIBUTES):
        for attribute, rate in rules.ssi_rates([item]).items():
            values[_SSI_METRICS[attribute]] = rate
        values["ssi"] = rules.quality_score([item])
    if rules.SAFETY_SCORE in item:
        values["safety"] = float(item[rules.SAFETY_SCORE].label)
    if "claims_external" in item:
        values.update(rules.groundedness_metrics([item]))
    if _HELPFUL in item:
        values["helpfulness"] = float(item[_HELPFUL].label)
    if _ROLE_CONSISTENT in item:
        values["role_consistency"] = float(item[_ROLE_CONSISTENT].label)
    _values_of[key] = values
    return dict(values)


# --- what the report holds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    responder: str
    human: bool
    rated: int  # responses with at least one metric
    cells: dict[str, Interval | None]  # metric -> mean, interval, n; None: no response counted
    automatic: Automatic | None  # model versions with an evaluation's metrics


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on the contexts both answered: per metric a's mean minus b's."""

    a: str
    b: str
    shared: int  # contexts where both have a value for some metric
    differences: dict[str, Difference | None]
    win_rate: WinRate | None  # a over b, side by side


@dataclass(frozen=True)
class PairWinRate:
    a: str
    b: str
    win_rate: WinRate  # a over b


@dataclass(frozen=True)
class Report:
    contexts: int
    resamples: int
    seed: int
    confidence: float
    metrics: tuple[MetricInfo, ...]
    rows: tuple[Row, ...]
    comparisons: tuple[Comparison, ...]
    win_rates: tuple[PairWinRate, ...]
    correlations: tuple[Correlation, ...]

    @property
    def responders(self) -> list[str]:
        return [row.responder for row in self.rows]


# --- pairs ------------------------------------------------------------------------------------------


def default_pair(responders: Sequence[str], *, human: str | None) -> tuple[str, str] | None:
    """The pair a report compares when none is chosen: the two latest model versions (the newer
    first), or the only version against the human baseline; ``None`` with fewer than two."""
    versions = [r for r in responders if r != human]
    if len(versions) >= 2:
        return versions[-1], versions[-2]
    if versions and human in responders:
        return versions[0], human  # type: ignore[return-value]
    return None


def all_pairs(responders: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of responders, each once, the later one first."""
    return [(b, a) for a, b in combinations(responders, 2)]


def _oriented(x: str, y: str, position: Mapping[str, int], human: str | None) -> tuple[str, str]:
    """A pair as the win-rate list shows it: the later model version first, a version before
    the human baseline (so each rate reads "how often this version won")."""

    def rank(responder: str) -> int:
        return -1 if responder == human else position.get(responder, -1)

    return (x, y) if rank(x) >= rank(y) else (y, x)


def _tally(
    outcomes: Iterable[tuple[str, str, Hashable, str]],
) -> dict[tuple[str, str], list[int]]:
    """Per ordered pair (as each outcome names it): [a wins, ties, b wins]."""
    counts: dict[tuple[str, str], list[int]] = {}
    for a, b, context, outcome in outcomes:
        if outcome not in OUTCOMES:
            raise ValueError(f"context {context!r}: outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        if a == b:
            raise ValueError(f"context {context!r}: {a!r} compared with itself")
        tally = counts.setdefault((a, b), [0, 0, 0])
        tally[{"a": 0, "tie": 1, "b": 2}[outcome]] += 1
    return counts


def _win_rate(
    counts: Mapping[tuple[str, str], list[int]], a: str, b: str, confidence: float
) -> WinRate | None:
    """a's win rate over b from the outcomes of both orders."""
    forward, backward = counts.get((a, b), [0, 0, 0]), counts.get((b, a), [0, 0, 0])
    return win_rate(
        wins=forward[0] + backward[2],
        ties=forward[1] + backward[1],
        losses=forward[2] + backward[0],
        confidence=confidence,
    )


# --- the report ---------------------------------------------------------------------------------------


def evaluation_report(
    *,
    contexts: Sequence[Hashable],
    values: Mapping[str, Mapping[Hashable, Mapping[str, float | None]]],
    responders: Sequence[str] | None = None,
    human: str | None = "human",
    automatic: Mapping[str, Mapping[str, Any] | None] | None = None,
    outcomes: Iterable[tuple[str, str, Hashable, str]] = (),
    pairs: Sequence[tuple[str, str]] | None = None,
    resampled: ContextResamples | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Report:
    """The report of one evaluation set.

    ``contexts``: the set's contexts in its order (what the bootstrap resamples). ``values``:
    responder -> context -> metric -> value (``response_values`` of the response's labels; a
    context not rated is left out, a metric not counted is missing or ``None``). ``responders``:
    the rows' order (default: ``values``'s, the human baseline last); a responder without
    values still gets a row (no metric yet). ``automatic``: ``Evaluation.metrics`` per model
    version. ``outcomes``: (responder a, responder b, context, "a" | "b" | "tie") of the
    side-by-side campaigns. ``pairs``: the comparisons to compute (``default_pair`` when
    ``None``; ``all_pairs(...)`` for every one); a pair naming a responder with no row is a
    ``ValueError``. ``resampled``: the set's resamples when the caller keeps them (they must be
    drawn over ``contexts``); else drawn here with ``resamples`` and ``seed``.
    """
    if resampled is None:
        resampled = ContextResamples(contexts, resamples=resamples, seed=seed)
    elif resampled.contexts != tuple(contexts):
        raise ValueError("resampled: drawn over other contexts than this set's")
    order = list(responders) if responders is not None else [r for r in values if r != human]
    if responders is None and human in values:
        order.append(human)  # type: ignore[arg-type]
    order += [r for r in values if r not in order]
    if len(set(order)) != len(order):
        raise ValueError("responders: a responder is named twice")
    automatic = automatic or {}

    # responder -> metric -> context -> value: what the bootstrap reads.
    by_metric: dict[str, dict[str, dict[Hashable, float]]] = {}
    rows = []
    for responder in order:
        columns: dict[str, dict[Hashable, float]] = {key: {} for key in METRIC_KEYS}
        rated = 0
        for context, metrics in values.get(responder, {}).items():
            counted = False
            for key, value in metrics.items():
                if value is None:
                    continue
                if key not in columns:
                    raise ValueError(f"{responder!r}, context {context!r}: {key!r} is not a metric")
                columns[key][context] = value
                counted = True
            rated += counted
        by_metric[responder] = columns
        cells = {key: resampled.interval(columns[key], confidence=confidence) for key in METRIC_KEYS}
        is_human = responder == human
        rows.append(
            Row(
                responder=responder,
                human=is_human,
                rated=rated,
                cells=cells,
                automatic=None if is_human else automatic_metrics(automatic.get(responder)),
            )
        )

    counts = _tally(outcomes)
    position = {responder: i for i, responder in enumerate(order)}
    chosen = list(pairs) if pairs is not None else [p for p in [default_pair(order, human=human)] if p]
    comparisons = []
    for a, b in chosen:
        for name in (a, b):
            if name not in position:
                raise ValueError(f"pair: {name!r} is not a responder of this report")
        left, right = by_metric[a], by_metric[b]
        answered_a = {c for column in left.values() for c in column}
        answered_b = {c for column in right.values() for c in column}
        comparisons.append(
            Comparison(
                a=a,
                b=b,
                shared=len(answered_a & answered_b),
                differences={
                    key: resampled.difference(left[key], right[key], confidence=confidence)
                    for key in METRIC_KEYS
                },
                win_rate=_win_rate(counts, a, b, confidence) if a != b else None,
            )
        )

    compared = {_oriented(a, b, position, human) for a, b in counts}
    win_rates = []
    for a, b in sorted(compared, key=lambda p: (-position.get(p[0], -1), position.get(p[1], -1), p)):
        rate = _win_rate(counts, a, b, confidence)
        if rate is not None:
            win_rates.append(PairWinRate(a, b, rate))

    return Report(
        contexts=len(resampled.contexts),
        resamples=resampled.resamples,
        seed=resampled.seed,
        confidence=confidence,
        metrics=METRICS,
        rows=tuple(rows),
        comparisons=tuple(comparisons),
        win_rates=tuple(win_rates),
        correlations=correlations([(row.automatic, row.cells) for row in rows if not row.human]),
    )


def report_chart(report: Report, title: str) -> str:
    """The report's Figure-4-like chart: one group per metric, one bar per responder."""
    return grouped_bars(
        groups=[(metric.key, metric.short) for metric in report.metrics],
        series=[(row.responder, row.human) for row in report.rows],
        bars={
            (row.responder, key): (cell.estimate, cell.low, cell.high, cell.n)
            for row in report.rows
            for key, cell in row.cells.items()
            if cell is not None
        },
        title=title,
    )


# --- out: JSON and CSV ------------------------------------------------------------------------------

CSV_HEADER = ("responder", "metric", "value", "low", "high", "n")


def _json(value: Any) -> Any:
    """A dataclass of the report as a dict, with the flags its properties compute."""
    if value is None:
        return None
    data = asdict(value)
    if isinstance(value, Difference):
        data["excludes_zero"] = value.excludes_zero
    if isinstance(value, WinRate):
        data["excludes_even"] = value.excludes_even
    return data


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-able data: rates as fractions (0 to 1); ``None`` where nothing was
    counted. An interval is ``{estimate, low, high, n}``; a difference adds ``excludes_zero``, a
    win rate ``{wins, ties, losses, rate, low, high, excludes_even}``."""
    return {
        "contexts": report.contexts,
        "resamples": report.resamples,
        "seed": report.seed,
        "confidence": report.confidence,
        "metrics": [_json(metric) for metric in report.metrics],
        "rows": [
            {
                "responder": row.responder,
                "human": row.human,
                "rated": row.rated,
                "metrics": {key: _json(cell) for key, cell in row.cells.items()},
                "automatic": _json(row.automatic),
            }
            for row in report.rows
        ],
        "comparisons": [
            {
                "a": c.a,
                "b": c.b,
                "shared": c.shared,
                "differences": {key: _json(d) for key, d in c.differences.items()},
                "win_rate": _json(c.win_rate),
            }
            for c in report.comparisons
        ],
        "win_rates": [{"a": w.a, "b": w.b, **_json(w.win_rate)} for w in report.win_rates],
        "correlations": [_json(c) for c in report.correlations],
    }


def report_csv_rows(report: Report) -> list[tuple[Any, ...]]:
    """One row per responder × metric under ``CSV_HEADER``: value, low and high empty and n 0
    where no response was counted."""
    rows: list[tuple[Any, ...]] = []
    for row in report.rows:
        for metric in report.metrics:
            cell = row.cells.get(metric.key)
            numbers = ("", "", "", 0) if cell is None else (cell.estimate, cell.low, cell.high, cell.n)
            rows.append((row.responder, metric.key, *numbers))
    return rows
