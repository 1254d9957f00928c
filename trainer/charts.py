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


def metrics_table(metrics: Any) -> dict[str, Any] | None:
    """Initial against final evaluation (validation loss, per-attribute accuracy and AUC)."""
    if not isinstance(metrics, dict) or not metrics:
        return None
    initial = metrics.get("initial") or {}
    final = metrics.get("final") or {}
    before, after = initial.get("attributes") or {}, final.get("attributes") or {}
    attributes = [
        {
            "name": name,
            "n": (after.get(name) or before.get(name) or {}).get("n"),
            "initial_accuracy": (before.get(name) or {}).get("accuracy"),
            "final_accuracy": (after.get(name) or {}).get("accuracy"),
            "initial_auc": (before.get(name) or {}).get("auc"),
            "final_auc": (after.get(name) or {}).get("auc"),
        }
        for name in sorted(set(before) | set(after))
    ]
    return {
        "initial_loss": initial.get("validation_loss"),
        "final_loss": final.get("validation_loss"),
        "examples": final.get("validation_examples", initial.get("validation_examples")),
        "train_loss": metrics.get("train_loss"),
        "tokens_per_second": metrics.get("tokens_per_second"),
        "attributes": attributes,
    }
