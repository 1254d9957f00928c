"""The job and model pages' drawings: the loss curve keeps its ends and at most 300 points, the
metrics table pairs the initial and the final evaluation and gives their change."""

from __future__ import annotations

from tests.trainer.test_admin import FINAL, INITIAL
from trainer.charts import change, loss_curve, metrics_table


def test_the_loss_curve_keeps_at_most_300_points_with_both_ends() -> None:
    curve = loss_curve([[step, 10.0 / step] for step in range(1, 5001)])

    assert curve is not None
    assert curve["count"] == 300
    assert (curve["step_first"], curve["step_last"]) == (1, 5000)
    assert curve["loss_max"] == 10.0
    assert len(curve["points"].split()) == 300
    assert loss_curve([]) is None
    assert loss_curve([[1, float("nan")], ["x", 2]]) is None
    assert len(loss_curve([[3, 1.0]])["points"].split()) == 2


def test_metrics_table_pairs_initial_and_final() -> None:
    table = metrics_table({"initial": INITIAL, "final": FINAL})

    assert table is not None
    assert (table["initial_loss"], table["final_loss"]) == (6.25, 2.5)
    assert table["attributes"] == [
        {
            "name": "sensible",
            "n": 12,
            "initial_accuracy": 0.5,
            "final_accuracy": 0.75,
            "accuracy_change": "+0.250",
            "initial_auc": 0.5,
            "final_auc": 0.8125,
            "auc_change": "+0.312",
        }
    ]
    assert table["mix"] is None
    assert metrics_table({}) is None


def test_a_change_needs_two_numbers() -> None:
    assert change(0.75, 0.5) == "-0.250"
    assert change(None, 0.5) is None  # an AUC over one class
    assert change(0.5, float("nan")) is None
