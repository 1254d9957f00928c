"""The trainer pages' drawings, computed from stored numbers: the loss curve as SVG coordinates,
the table of initial against final evaluation (a DPO job's figures included), the evaluation
report's grouped bars (an SVG string), and a job's model size in words. Pure: no Django."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from trainer import sizing

CURVE_POINTS = 300
# The loss curve's drawing: the whole picture and the plot box inside it (room for the labels).
CURVE_WIDTH, CURVE_HEIGHT = 640, 220
CURVE_LEFT, CURVE_RIGHT, CURVE_TOP, CURVE_BOTTOM = 64, 628, 12, 190


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def loss_curve(history: Any, *, max_points: int = CURVE_POINTS) -> dict[str, Any] | None:
    """The SVG drawing of ``[[step, loss], ...]``: polyline points (at most ``max_points``, evenly
    taken, the first and last kept) and the axes' labels; None when there is nothing to draw."""
    points = [
        (int(entry[0]), float(entry[1]))
        for entry in (history if isinstance(history, list) else [])
        if isinstance(entry, list | tuple) and len(entry) >= 2 and finite(entry[0]) and finite(entry[1])
    ]
    if not points:
        return None
    if len(points) > max_points:
        last = len(points) - 1
        points = [points[round(i * last / (max_points - 1))] for i in range(max_points)]
    steps = [step for step, _ in points]
    losses = [loss for _, loss in points]
    first, final = min(steps), max(steps)
    low, high = min(losses), max(losses)
    x_span, y_span = (final - first) or 1, (high - low) or 1.0
    width, height = CURVE_RIGHT - CURVE_LEFT, CURVE_BOTTOM - CURVE_TOP

    def xy(step: int, loss: float) -> str:
        x = CURVE_LEFT + (step - first) / x_span * width
        y = CURVE_TOP + (high - loss) / y_span * height
        return f"{x:.1f},{y:.1f}"

    coordinates = [xy(step, loss) for step, loss in points]
    if len(coordinates) == 1:  # one report so far: a flat dash rather than nothing
        coordinates = [f"{CURVE_LEFT},{coordinates[0].split(',')[1]}", coordinates[0]]
    return {
        "points": " ".join(coordinates),
        "count": len(points),
        "loss_min": low,
        "loss_max": high,
        "step_first": first,
        "step_last": final,
        "width": CURVE_WIDTH,
        "height": CURVE_HEIGHT,
        "left": CURVE_LEFT,
        "right": CURVE_RIGHT,
        "top": CURVE_TOP,
        "bottom": CURVE_BOTTOM,
        "label_x": CURVE_LEFT - 6,
        "label_y": CURVE_BOTTOM + 18,
        "middle_x": (CURVE_LEFT + CURVE_RIGHT) // 2,
        "middle_y": (CURVE_TOP + CURVE_BOTTOM) // 2,
    }


def change(before: Any, after: Any) -> str | None:
    """``after - before`` signed to 3 decimals (``+0.125``, ``-0.050``); None unless both are
    finite numbers (an AUC is None when the held-out examples have one class)."""
    if not (finite(before) and finite(after)):
        return None
    return f"{after - before:+.3f}"


def percent(value: Any) -> str | None:
    """A share as ``52.7 %`` (None when it is not a finite number)."""
    return f"{100 * value:.1f} %" if finite(value) else None


def points_change(before: Any, after: Any) -> str | None:
    """The change of a share in percentage points (``+33.3 pp``); None unless both are finite."""
    return f"{100 * (after - before):+.1f} pp" if finite(before) and finite(after) else None


def _decimals(value: Any) -> str | None:
    """``value`` to 3 decimals; a margin that rounds to nothing reads 0.000, never -0.000."""
    if not finite(value):
        return None
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


# A DPO job's figures on its pairs (``preference_training.preference_metrics``), as its pages show
# them: key, name, what it is (the name's tooltip), whether it is a share.
PREFERENCE_FIGURES = (
    (
        "dpo_loss",
        "DPO loss",
        "−log σ(β[(log πθ(chosen) − log πref(chosen)) − (log πθ(rejected) − log πref(rejected))]), "
        "the mean over the pairs. The reference is the base model, so before training it is log 2 ≈ 0.693.",
        False,
    ),
    (
        "reward_accuracy",
        "reward accuracy",
        "The share of pairs whose implicit reward margin is positive: the model prefers the chosen "
        "response more than the base model did. 0 before training, when every margin is 0.",
        True,
    ),
    (
        "reward_margin",
        "reward margin",
        "The mean implicit reward margin β[(log πθ(chosen) − log πref(chosen)) − (log πθ(rejected) − "
        "log πref(rejected))]; 0 before training.",
        False,
    ),
    (
        "logp_margin",
        "log-likelihood margin",
        "The mean of log π(chosen) − log π(rejected) under the model: the base model's own before training.",
        False,
    ),
)
PREFERENCE_SPLITS = (("train", "training"), ("validation", "validation"))


def _preference_rows(
    initial: dict[str, Any], final: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """A DPO job's figures per split, initial against final with their change, and the splits that
    have no pairs (none of this for other jobs)."""
    before, after = initial.get("preference") or {}, final.get("preference") or {}
    rows: list[dict[str, Any]] = []
    without_pairs: list[str] = []
    if not (before or after):
        return rows, without_pairs
    for split, split_name in PREFERENCE_SPLITS:
        was, now = before.get(split) or {}, after.get(split) or {}
        pairs = now.get("pairs", was.get("pairs"))
        if not pairs:
            without_pairs.append(split_name)
            continue
        for key, name, meaning, share in PREFERENCE_FIGURES:
            shown = percent if share else _decimals
            rows.append(
                {
                    "name": name,
                    "meaning": meaning,
                    "split": split_name,
                    "pairs": pairs,
                    "initial": shown(was.get(key)),
                    "final": shown(now.get(key)),
                    "change": (points_change if share else change)(was.get(key), now.get(key)),
                }
            )
    return rows, without_pairs


def metrics_table(metrics: Any) -> dict[str, Any] | None:
    """Initial (before training: the base model) against final (the new weights) evaluation:
    validation loss, Hits@1 of 20 on held-out turns (``trainer.ranking``; a new model has no
    initial figure), and per attribute accuracy and AUC with their change; ``preference``: a DPO
    job's figures on its training and validation pairs with their change (``without_pairs``: the
    splits it had none of); ``mix`` is what a groundedness fine-tune mixed in of its base model's
    quality-safety data (None for others)."""
    if not isinstance(metrics, dict) or not metrics:
        return None
    initial = metrics.get("initial") or {}
    final = metrics.get("final") or {}
    before, after = initial.get("attributes") or {}, final.get("attributes") or {}
    attributes = []
    for name in sorted(set(before) | set(after)):
        was, now = before.get(name) or {}, after.get(name) or {}
        attributes.append(
            {
                "name": name,
                "n": (now or was).get("n"),
                "initial_accuracy": was.get("accuracy"),
                "final_accuracy": now.get("accuracy"),
                "accuracy_change": change(was.get("accuracy"), now.get("accuracy")),
                "initial_auc": was.get("auc"),
                "final_auc": now.get("auc"),
                "auc_change": change(was.get("auc"), now.get("auc")),
            }
        )
    preference, without_pairs = _preference_rows(initial, final)
    mix = metrics.get("mix")
    return {
        "initial_loss": initial.get("validation_loss"),
        "final_loss": final.get("validation_loss"),
        "examples": final.get("validation_examples", initial.get("validation_examples")),
        "initial_hits": percent(initial.get("hits_at_1")),
        "final_hits": percent(final.get("hits_at_1")),
        "hits_contexts": final.get("hits_contexts", initial.get("hits_contexts")),
        "hits_candidates": (candidates := final.get("hits_candidates", initial.get("hits_candidates"))),
        "hits_chance": percent(1 / candidates) if isinstance(candidates, int) and candidates > 0 else None,
        "train_loss": metrics.get("train_loss"),
        "tokens_per_second": metrics.get("tokens_per_second"),
        "attributes": attributes,
        "preference": preference,
        "without_pairs": without_pairs,
        "mix": mix if isinstance(mix, dict) else None,
    }


# --- grouped bars with error bars (the evaluation report's chart, like the paper's Figure 4) -------

BAR_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#86bcb6",
)
BASELINE_COLOUR = "#555555"
BARS_TOP, BARS_PLOT_HEIGHT, BARS_LEFT, BARS_RIGHT_MARGIN = 16, 220, 56, 16
BARS_GROUP_GAP, BARS_GROUP_MIN_WIDTH, BARS_LEGEND_ROW, BARS_LEGEND_ITEM = 18, 72, 18, 150
# A bar chart shrinks to the page's width (the stylesheet's max-width: 100%), down to this share of
# its size (11 px text stays 8 px or more); a narrower page scrolls it sideways.
BARS_LEAST_SCALE = 0.75


def _series_colour(index: int, count: int, baseline: bool) -> str:
    if baseline:
        return BASELINE_COLOUR
    if count <= len(BAR_PALETTE):
        return BAR_PALETTE[index]
    # Many versions: hues spread evenly, neighbours told apart by lightness too.
    return f"hsl({round(index * 360 / count)}, 60%, {40 if index % 2 else 58}%)"


def grouped_bars(
    *,
    groups: Sequence[tuple[str, str]],
    series: Sequence[tuple[str, bool]],
    bars: Mapping[tuple[str, str], tuple[float, float, float, int] | None],
    title: str,
    y_label: str = "rate (95% CI)",
) -> str:
    """An SVG bar chart, one group per ``groups`` entry (key, label) and one bar per ``series``
    entry (name, is the baseline: drawn grey) in every group, at ``bars[(name, key)]`` =
    (estimate, low, high, n) on a 0–1 axis, with an error bar from low to high; a missing bar
    (``None``) leaves its place empty. Axis, gridlines, group labels and a legend are labelled;
    every bar has a tooltip (``<title>``). Text is escaped: the result is well-formed XML."""
    count = max(len(series), 1)
    bar = max(6, min(18, (BARS_GROUP_MIN_WIDTH - 8) // count))
    group_width = max(BARS_GROUP_MIN_WIDTH, bar * count + 8)
    plot_width = len(groups) * (group_width + BARS_GROUP_GAP)
    per_row = max(1, (BARS_LEFT + plot_width) // BARS_LEGEND_ITEM)
    legend_rows = math.ceil(len(series) / per_row)
    bottom = BARS_TOP + BARS_PLOT_HEIGHT
    width = BARS_LEFT + plot_width + BARS_RIGHT_MARGIN
    height = bottom + 30 + legend_rows * BARS_LEGEND_ROW + 8

    def y(value: float) -> float:
        return bottom - max(0.0, min(1.0, value)) * BARS_PLOT_HEIGHT

    out = [
        f'<svg class="report-chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-size="11" '
        f'font-family="sans-serif" style="min-width: {round(width * BARS_LEAST_SCALE)}px">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        out.append(
            f'<line class="grid" x1="{BARS_LEFT}" y1="{y(tick):.1f}" x2="{BARS_LEFT + plot_width}" '
            f'y2="{y(tick):.1f}" stroke="currentColor" stroke-opacity="{0.5 if tick == 0 else 0.15}"/>'
            f'<text class="tick" x="{BARS_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    middle = BARS_TOP + BARS_PLOT_HEIGHT / 2
    out.append(
        f'<text class="axis-label" x="14" y="{middle:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle:.1f})">{escape(y_label)}</text>'
    )
    for g, (key, label) in enumerate(groups):
        left = BARS_LEFT + g * (group_width + BARS_GROUP_GAP) + BARS_GROUP_GAP / 2
        start = left + (group_width - bar * count) / 2
        for s, (name, baseline) in enumerate(series):
            value = bars.get((name, key))
            if value is None:
                continue
            estimate, low, high, n = value
            x = start + s * bar
            centre, cap = x + bar / 2, max(1.5, bar * 0.3)
            tip = f"{name} · {label}: {estimate:.3f} [{low:.3f}, {high:.3f}], n = {n}"
            out.append(
                f'<g class="bar"><title>{escape(tip)}</title>'
                f'<rect x="{x + 0.5:.1f}" y="{y(estimate):.1f}" width="{bar - 1}" '
                f'height="{y(0) - y(estimate):.1f}" fill="{_series_colour(s, count, baseline)}"/>'
                f'<path class="error-bar" d="M{centre:.1f},{y(low):.1f}V{y(high):.1f}'
                f"M{centre - cap:.1f},{y(low):.1f}H{centre + cap:.1f}"
                f'M{centre - cap:.1f},{y(high):.1f}H{centre + cap:.1f}" stroke="#222" fill="none"/></g>'
            )
        out.append(
            f'<text class="group-label" x="{left + group_width / 2:.1f}" y="{bottom + 16}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    for s, (name, baseline) in enumerate(series):
        x = BARS_LEFT + (s % per_row) * BARS_LEGEND_ITEM
        top = bottom + 30 + (s // per_row) * BARS_LEGEND_ROW
        out.append(
            f'<g class="legend"><title>{escape(name)}</title><rect x="{x}" y="{top}" width="12" height="12" '
            f'fill="{_series_colour(s, count, baseline)}"/>'
            f'<text x="{x + 16}" y="{top + 10}">{escape(name[:22])}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def size_facts(
    size: Mapping[str, Any] | None, *, latest: float | None, average: float | None
) -> dict[str, Any] | None:
    """A job's model size (``selectors.job_size``) in words for its page, with its measured
    tokens/s (``latest``: the last interval's, ``average``: over the run) and the model FLOP/s the
    average (else the latest) makes (``sizing.flops_per_token``); None when the size is unknown."""
    if size is None:
        return None
    memory = size.get("memory")
    parameters = size.get("parameters")
    rate = average or latest
    flops = size.get("flops_per_token")
    return {
        **size,
        "parameters_text": f"{parameters:,} ({sizing.human_count(parameters)})" if parameters else "",
        "memory_text": sizing.human_bytes(memory["total"]) if memory else "",
        "memory_parts": (
            ", ".join(
                f"{name} {sizing.human_bytes(memory[name])}"
                for name in ("weights", "gradients", "optimizer", "activations")
            )
            if memory
            else ""
        ),
        "flops_text": f"{flops / 1e6:,.1f} MFLOP" if flops else "",
        "latest_tokens_per_second": latest,
        "average_tokens_per_second": average,
        "model_flops_text": f"{rate * flops / 1e9:,.2f} GFLOP/s" if rate and flops else "",
    }
