"""The trainer pages' drawings: the loss curve keeps its ends and at most 300 points, the
metrics table pairs the initial and the final evaluation and gives their change, and the
evaluation report's chart is well-formed SVG with a bar and an error bar per responder and metric,
labelled axis, groups and legend."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.trainer.test_admin import FINAL, INITIAL
from trainer.charts import BASELINE_COLOUR, change, grouped_bars, loss_curve, metrics_table


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


# --- the evaluation report's grouped bars -----------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"
GROUPS = [("sensibleness", "Sensible"), ("safety", "Safe"), ("groundedness", "Grounded")]


def chart(series: list[tuple[str, bool]], bars: dict) -> ET.Element:
    # Our own SVG, not untrusted input: the standard parser proves it well-formed.
    drawn = grouped_bars(groups=GROUPS, series=series, bars=bars, title="Report of <mtb> v1")
    return ET.fromstring(drawn)  # noqa: S314


def test_the_report_chart_is_well_formed_svg_with_one_bar_per_responder_and_metric() -> None:
    series = [("gw-1", False), ("gw-2 & co", False), ("human", True)]
    bars = {
        (name, key): (0.5 + i / 10, 0.4 + i / 10, 0.6 + i / 10, 40)
        for i, (name, _) in enumerate(series)
        for key, _ in GROUPS
    }
    bars[("human", "groundedness")] = None  # not rated: no bar

    svg = chart(series, bars)

    assert svg.tag == f"{SVG}svg"
    assert svg.find(f"{SVG}title").text == "Report of <mtb> v1"
    drawn = svg.findall(f"{SVG}g[@class='bar']")
    assert len(drawn) == 3 * 3 - 1
    tips = [g.find(f"{SVG}title").text for g in drawn]
    assert "gw-2 & co · Safe: 0.600 [0.500, 0.700], n = 40" in tips
    for g in drawn:  # a bar and its error bar: a vertical line from low to high with two caps
        assert g.find(f"{SVG}rect") is not None
        assert g.find(f"{SVG}path").get("class") == "error-bar"
        assert g.find(f"{SVG}path").get("d").count("M") == 3
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "rate (95% CI)" in texts  # the y axis
    assert {"0", "0.5", "1"} <= set(texts)  # its ticks
    assert {"Sensible", "Safe", "Grounded"} <= set(texts)  # one group per metric
    legend = [g.find(f"{SVG}text").text for g in svg.findall(f"{SVG}g[@class='legend']")]
    assert legend == ["gw-1", "gw-2 & co", "human"]
    colours = [g.find(f"{SVG}rect").get("fill") for g in svg.findall(f"{SVG}g[@class='legend']")]
    assert len(set(colours)) == 3
    assert colours[2] == BASELINE_COLOUR


def test_the_bar_heights_and_error_bars_follow_the_numbers() -> None:
    svg = chart([("gw-1", False)], {("gw-1", "sensibleness"): (0.5, 0.25, 0.75, 10)})

    (bar,) = svg.findall(f"{SVG}g[@class='bar']")
    rect = bar.find(f"{SVG}rect")
    zero, one = 16 + 220, 16  # the plot's bottom and top
    assert float(rect.get("y")) == pytest.approx(zero - 110)
    assert float(rect.get("height")) == pytest.approx(110)
    d = bar.find(f"{SVG}path").get("d")
    assert f",{zero - 55:.1f}V{one + 55:.1f}" in d  # from 0.25 up to 0.75


def test_twenty_responders_still_get_distinct_colours_and_a_legend_each() -> None:
    series = [(f"gw-{i}", False) for i in range(20)] + [("human", True)]
    bars = {(name, key): (0.5, 0.4, 0.6, 9) for name, _ in series for key, _ in GROUPS}

    svg = chart(series, bars)

    assert len(svg.findall(f"{SVG}g[@class='bar']")) == 21 * 3
    fills = {g.find(f"{SVG}rect").get("fill") for g in svg.findall(f"{SVG}g[@class='legend']")}
    assert len(fills) == 21
