"""Figures of a benchmark: progress lines, the printed table and ``var/bench/results.json``."""

from __future__ import annotations

import json
import math
import operator
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench" / "results.json"

_STARTED = time.monotonic()

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "≤": operator.le,
    "≥": operator.ge,
    "=": operator.eq,
}


def say(message: str) -> None:
    """A progress line, with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)


def elapsed() -> float:
    return time.monotonic() - _STARTED


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100] of ``values``."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Metric:
    name: str
    value: Any
    unit: str
    goal: str = ""  # "≤ 1.5", "≥ 300", "= 0", or "" when the figure is for information

    def ok(self) -> bool | None:
        """Whether the value meets the goal; None when there is no goal."""
        if not self.goal:
            return None
        symbol, _, threshold = self.goal.partition(" ")
        compare = _OPERATORS[symbol]
        return isinstance(self.value, int | float) and compare(self.value, float(threshold))


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def print_table(metrics: Sequence[Metric]) -> None:
    rows = [("name", "value", "unit", "goal", "ok")]
    for metric in metrics:
        ok = metric.ok()
        verdict = "-" if ok is None else "ok" if ok else "NOT OK"
        rows.append((metric.name, _format(metric.value), metric.unit, metric.goal or "-", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    line = "  ".join("-" * width for width in widths)
    print(line)
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print(line)
    print(line, flush=True)


def write_results(metrics: Sequence[Metric], *, replace: Sequence[str] = (), path: Path = RESULTS) -> Path:
    """Merge the figures into ``path``: keys starting with one of the ``replace`` prefixes are dropped
    first (this benchmark's own, from an earlier run); other benchmarks keep theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if path.exists():
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            results = {}
    results = {name: entry for name, entry in results.items() if not name.startswith(tuple(replace))}
    for metric in metrics:
        value = round(metric.value, 4) if isinstance(metric.value, float) else metric.value
        results[metric.name] = {"value": value, "unit": metric.unit, "goal": metric.goal}
    temporary = path.with_suffix(f".{os.getpid()}.partial")
    temporary.write_text(json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    temporary.replace(path)
    return path


def part_skipped(parts: str, part: str, what: str) -> bool:
    """Whether ``--parts`` (comma-separated) leaves ``part`` out; if so, says that ``what`` is skipped."""
    if part in [name.strip() for name in parts.split(",")]:
        return False
    say(f"{what} benchmark skipped (--parts {parts} does not name {part!r})")
    return True


def bench_database_refusal() -> str | None:
    """Why the configured database may not be benchmarked on (it is not a PostgreSQL database whose
    name ends in ``_bench``: a benchmark writes and drops freely), or None when it may."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql" or not database["NAME"].endswith("_bench"):
        return f"DATABASE_URL must name a PostgreSQL *_bench database, not {database['NAME']!r}"
    return None


def finish(metrics: Sequence[Metric], *, replace: Sequence[str]) -> None:
    """Print the table of ``metrics`` and merge them into the results file (``write_results``)."""
    print()
    print_table(metrics)
    path = write_results(metrics, replace=replace)
    say(f"results merged into {path.relative_to(ROOT)}")
