"""The job and model pages' drawings, computed from stored numbers: the loss curve as SVG
coordinates and the table of initial against final evaluation. Pure: no Django."""

from __future__ import annotations

import math
from typing import Any

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


def metrics_table(metrics: Any) -> dict[str, Any] | None:
    """Initial (before training: the base model) against final (the new weights) evaluation:
    validation loss, and per attribute accuracy and AUC with their change; ``mix`` is what a
    groundedness fine-tune mixed in of its base model's quality-safety data (None for others)."""
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
    mix = metrics.get("mix")
    return {
        "initial_loss": initial.get("validation_loss"),
        "final_loss": final.get("validation_loss"),
        "examples": final.get("validation_examples", initial.get("validation_examples")),
        "train_loss": metrics.get("train_loss"),
        "tokens_per_second": metrics.get("tokens_per_second"),
        "attributes": attributes,
        "mix": mix if isinstance(mix, dict) else None,
    }
