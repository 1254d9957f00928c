"""trainer.evaluation_report, the pure core of an evaluation set's report: constructed inputs in,
numbers out, checked against ``annotation.rules`` on the same labels and against known cases
(all yes is [1, 1]; identical responders differ by [0, 0]; a clear gain is flagged; textbook
correlations; win rates with ties counted half). No database."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from annotation import rules
from annotation.statistics import ContextResamples, win_rate
from trainer.evaluation_automatic import automatic_metrics, pearson, spearman
from trainer.evaluation_report import (
    CSV_HEADER,
    METRIC_KEYS,
    all_pairs,
    default_pair,
    evaluation_report,
    report_csv_rows,
    report_json,
    response_values,
)

ALL_YES = {
    "sensible": 1,
    "specific": 1,
    "interesting": 1,
    "safety": 1,
    "claims_external": 1,
    "well_known": 0,
    "factually_correct": 1,
    "cites_source": 1,
    "helpful": 1,
    "role_consistent": 1,
}
GROUNDEDNESS = ("claims_external", "well_known", "factually_correct", "cites_source")


def random_labels(rng: random.Random, p: float = 0.5) -> dict[str, int]:
    """Consensus labels of one response rated in every campaign kind, as the cascades leave them:
    specific only after sensible, interesting only after specific."""
    labels = {attribute: int(rng.random() < p) for attribute in ALL_YES}
    labels["specific"] &= labels["sensible"]
    labels["interesting"] &= labels["specific"]
    labels["harm"] = 0  # a safety objective's label: the rules read the safety row only
    labels["understandable"] = 1
    return labels


def as_rule_item(labels: Mapping[str, int]) -> dict[str, rules.Label]:
    return {
        a: rules.Label(attribute=a, label=v, yes=v, no=1 - v, maybe=0, yes_fraction=float(v))
        for a, v in labels.items()
    }


def values_of(per_context: Mapping[Any, Mapping[str, int]]) -> dict[Any, dict[str, float | None]]:
    return {context: response_values(labels) for context, labels in per_context.items()}


def report(contexts: list[Any], labelled: Mapping[str, Mapping[Any, Mapping[str, int]]], **kwargs: Any):
    """The report of responders' labels (responder -> context -> attribute -> 0/1)."""
    return evaluation_report(
        contexts=contexts,
        values={name: values_of(per_context) for name, per_context in labelled.items()},
        resamples=kwargs.pop("resamples", 500),
        **kwargs,
    )


# --- per response, and the means are the rules' rates ------------------------------------------------


def test_each_metrics_mean_over_contexts_is_what_the_rules_give_on_the_same_labels() -> None:
    rng = random.Random(7)
    labels = {context: random_labels(rng) for context in range(80)}
    items = [as_rule_item(labels[context]) for context in range(80)]

    row = report(list(range(80)), {"v1": labels}).rows[0]

    rates = rules.ssi_rates(items)
    assert row.cells["sensibleness"].estimate == pytest.approx(rates["sensible"])
    assert row.cells["specificity"].estimate == pytest.approx(rates["specific"])
    assert row.cells["interestingness"].estimate == pytest.approx(rates["interesting"])
    assert row.cells["ssi"].estimate == pytest.approx(rules.quality_score(items))
    grounded = rules.groundedness_metrics(items)
    for metric in ("groundedness", "informativeness", "citation_accuracy"):
        assert row.cells[metric].estimate == pytest.approx(grounded[metric]), metric
    assert row.cells["safety"].estimate == pytest.approx(sum(v["safety"] for v in labels.values()) / 80)
    assert row.cells["helpfulness"].estimate == pytest.approx(sum(v["helpful"] for v in labels.values()) / 80)
    # n: the responses each rule counts (groundedness: those with external claims only)
    assert row.cells["sensibleness"].n == 80
    assert row.cells["groundedness"].n == sum(v["claims_external"] for v in labels.values())
    external_not_known = [v for v in labels.values() if v["claims_external"] and not v["well_known"]]
    assert row.cells["citation_accuracy"].n == len(external_not_known)
    assert row.rated == 80


def test_a_response_without_external_claims_counts_for_informativeness_only() -> None:
    values = response_values(dict.fromkeys(GROUNDEDNESS, 0))

    assert values["groundedness"] is None
    assert values["citation_accuracy"] is None
    assert values["informativeness"] == 0
    assert values["sensibleness"] is None  # not rated in an SSI campaign
    assert values["safety"] is None


def test_well_known_claims_leave_citation_accuracy_but_stay_in_groundedness() -> None:
    values = response_values({**dict.fromkeys(GROUNDEDNESS, 1), "cites_source": 0})

    assert values["citation_accuracy"] is None
    assert values["groundedness"] == 1
    assert values["informativeness"] == 1


def test_ssi_of_one_response_is_the_mean_of_its_three_labels() -> None:
    assert response_values({"sensible": 1, "specific": 1, "interesting": 0})["ssi"] == pytest.approx(2 / 3)


def test_labels_the_rules_cannot_read_are_refused_with_the_attribute() -> None:
    with pytest.raises(ValueError, match="sensible: 2 is not a 0/1 label"):
        response_values({"sensible": 2, "specific": 0, "interesting": 0})
    with pytest.raises(ValueError, match="well_known"):
        response_values({"claims_external": 1, "factually_correct": 1, "cites_source": 1})


# --- intervals and paired differences ------------------------------------------------------------------


def test_all_yes_gives_one_to_one_for_every_metric() -> None:
    row = report(list(range(30)), {"v1": dict.fromkeys(range(30), ALL_YES)}).rows[0]

    for key in METRIC_KEYS:
        cell = row.cells[key]
        assert (cell.estimate, cell.low, cell.high, cell.n) == (1, 1, 1, 30), key


def test_a_metric_no_response_was_rated_for_has_no_interval() -> None:
    ssi_only = {"sensible": 1, "specific": 0, "interesting": 0}

    row = report(list(range(5)), {"v1": dict.fromkeys(range(5), ssi_only)}).rows[0]

    assert row.cells["sensibleness"].n == 5
    assert row.cells["safety"] is None
    assert row.cells["groundedness"] is None


def test_identical_responders_differ_by_zero_to_zero_and_are_not_flagged() -> None:
    rng = random.Random(3)
    labels = {context: random_labels(rng) for context in range(60)}

    result = report(list(range(60)), {"v1": labels, "v2": labels}, pairs=[("v2", "v1")])

    for key, difference in result.comparisons[0].differences.items():
        assert (difference.estimate, difference.low, difference.high) == (0, 0, 0), key
        assert not difference.excludes_zero
    assert result.comparisons[0].shared == 60


def test_a_clear_improvement_is_flagged_and_a_small_noisy_one_is_not() -> None:
    rng = random.Random(11)
    contexts = list(range(100))
    old = {c: random_labels(rng, p=0.3) for c in contexts}
    better = {c: {**old[c], "sensible": 1 if c % 10 else old[c]["sensible"]} for c in contexts}
    noisy = {c: {**old[c], "safety": int(rng.random() < 0.3)} for c in contexts}

    result = report(contexts, {"v1": old, "v2": better, "v3": noisy}, pairs=[("v2", "v1"), ("v3", "v1")])

    gain = result.comparisons[0].differences["sensibleness"]
    assert gain.estimate > 0.4
    assert gain.low > 0
    assert gain.excludes_zero
    unchanged = result.comparisons[0].differences["helpfulness"]
    assert (unchanged.low, unchanged.high) == (0, 0)
    assert not unchanged.excludes_zero
    coin = result.comparisons[1].differences["safety"]
    assert coin.low < 0 < coin.high
    assert not coin.excludes_zero


def test_a_difference_is_over_the_contexts_both_answered() -> None:
    first = dict.fromkeys(range(10), ALL_YES)
    second = {c: {**ALL_YES, "sensible": 0, "specific": 0, "interesting": 0} for c in range(5)}

    result = report(list(range(10)), {"v1": first, "v2": second}, pairs=[("v2", "v1")])

    comparison = result.comparisons[0]
    assert comparison.shared == 5
    assert comparison.differences["sensibleness"].n == 5
    assert comparison.differences["sensibleness"].estimate == -1


def test_the_same_inputs_and_seed_give_the_same_report_and_the_resamples_can_be_kept() -> None:
    rng = random.Random(5)
    responders = {f"v{i}": {c: random_labels(rng) for c in range(40)} for i in range(3)}
    contexts = list(range(40))
    kept = ContextResamples(contexts, resamples=500, seed=0)

    first = report(contexts, responders)
    second = report(contexts, responders)
    third = report(contexts, responders, resampled=kept)

    assert first == second == third
    with pytest.raises(ValueError, match="other contexts"):
        report(contexts[:-1], responders, resampled=kept)


# --- rows and pairs --------------------------------------------------------------------------------------


def test_rows_come_in_the_order_given_with_the_human_baseline_last_by_default() -> None:
    one = {0: ALL_YES}
    values = {"human": one, "gw-2": one, "gw-1": one}

    assert report([0], values).responders == ["gw-2", "gw-1", "human"]
    assert report([0], values, responders=["gw-1", "gw-2", "human", "gw-3"]).responders == [
        "gw-1",
        "gw-2",
        "human",
        "gw-3",  # evaluated, nothing rated yet: a row with no metric
    ]
    empty = report([0], values, responders=["gw-1", "gw-2", "human", "gw-3"]).rows[-1]
    assert empty.rated == 0
    assert all(cell is None for cell in empty.cells.values())


def test_the_default_pair_is_the_two_latest_versions_or_the_only_one_against_the_human() -> None:
    assert default_pair(["gw-1", "gw-2", "gw-3", "human"], human="human") == ("gw-3", "gw-2")
    assert default_pair(["gw-1", "human"], human="human") == ("gw-1", "human")
    assert default_pair(["gw-1"], human="human") is None
    assert all_pairs(["a", "b", "c"]) == [("b", "a"), ("c", "a"), ("c", "b")]


def test_a_pair_naming_no_responder_of_the_report_is_refused() -> None:
    with pytest.raises(ValueError, match="'gw-9' is not a responder"):
        report([0], {"gw-1": {0: ALL_YES}}, pairs=[("gw-1", "gw-9")])


# --- win rates -------------------------------------------------------------------------------------------


def test_win_rates_count_both_orders_and_ties_half_with_the_wilson_interval() -> None:
    outcomes = [
        *[("gw-2", "gw-1", c, "a") for c in range(6)],  # gw-2 shown first, won
        *[("gw-1", "gw-2", c, "b") for c in range(6, 9)],  # gw-2 shown second, won
        ("gw-2", "gw-1", 9, "tie"),
        ("gw-1", "gw-2", 10, "a"),  # gw-1 won once
        ("human", "gw-2", 11, "a"),
    ]
    one = {0: ALL_YES}

    result = report(list(range(12)), {"gw-1": one, "gw-2": one, "human": one}, outcomes=outcomes)

    expected = win_rate(wins=9, ties=1, losses=1)
    rates = {(w.a, w.b): w.win_rate for w in result.win_rates}
    assert rates[("gw-2", "gw-1")] == expected  # the later version first
    assert rates[("gw-2", "human")] == win_rate(wins=0, ties=0, losses=1)  # a version before the human
    assert expected.rate == pytest.approx(9.5 / 11)
    assert expected.excludes_even
    assert result.comparisons[0].a == "gw-2"
    assert result.comparisons[0].win_rate == expected
    flipped = report(
        list(range(12)), {"gw-1": one, "gw-2": one}, outcomes=outcomes[:-1], pairs=[("gw-1", "gw-2")]
    )
    assert flipped.comparisons[0].win_rate == win_rate(wins=1, ties=1, losses=9)


def test_a_value_of_no_metric_of_the_report_is_refused() -> None:
    with pytest.raises(ValueError, match="'gw-1', context 0: 'fluency' is not a metric"):
        evaluation_report(contexts=[0], values={"gw-1": {0: {"fluency": 1.0}}}, resamples=10)


def test_an_outcome_must_be_a_b_or_tie() -> None:
    with pytest.raises(ValueError, match="outcome 'left'"):
        report([0], {"gw-1": {0: ALL_YES}}, outcomes=[("gw-1", "gw-2", 0, "left")])


# --- automatic metrics and correlations -------------------------------------------------------------------


def automatic(sensible: float, unsafe: float, loss: float, hits: float) -> dict[str, Any]:
    """An ``Evaluation.metrics`` as trainer.models.Evaluation documents it."""
    return {
        "discriminators": {"SENSIBLE": sensible, "SPECIFIC": 0.4, "INTERESTING": 0.2, "UNSAFE": unsafe},
        "hits_at_1": hits,
        "hits_candidates": 20,
        "hits_contexts": 40,
        "validation_loss": loss,
        "contexts_per_second": 12.5,
        "fallbacks": 1,
    }


def sensible_share(share: int, total: int = 10) -> dict[int, dict[str, int]]:
    """Responses of which the first ``share`` are sensible (and safe), the others not."""
    return {
        c: {"sensible": int(c < share), "specific": 0, "interesting": 0, "safety": int(c < share)}
        for c in range(total)
    }


def test_three_versions_give_correlations_of_each_automatic_metric_with_its_human_one() -> None:
    values = {"gw-1": sensible_share(3), "gw-2": sensible_share(5), "gw-3": sensible_share(9)}
    metrics = {
        "gw-1": automatic(0.30, 0.40, 4.0, 0.10),
        "gw-2": automatic(0.70, 0.20, 3.5, 0.20),
        "gw-3": automatic(0.50, 0.10, 3.0, 0.30),
    }

    result = report(list(range(10)), values, automatic=metrics)

    found = {c.automatic: c for c in result.correlations}
    sensible = found["p_sensible"]
    assert sensible.versions == 3
    assert sensible.spearman == pytest.approx(0.5)  # ranks 1 3 2 against 1 2 3
    assert sensible.pearson == pytest.approx(np.corrcoef([0.3, 0.7, 0.5], [0.3, 0.5, 0.9])[0, 1])
    assert found["p_safe"].spearman == pytest.approx(1.0)  # 1 - P(UNSAFE) rises with safety
    assert found["validation_loss"].spearman == pytest.approx(-1.0)  # SSI rises as the loss falls
    assert found["validation_loss"].expected == -1
    assert found["hits_at_1"].spearman == pytest.approx(1.0)
    assert found["p_specific"].pearson is None  # the same prediction for every version
    assert found["p_specific"].note == "constant across versions"
    row = result.rows[0]
    assert row.automatic.discriminators["SENSIBLE"] == 0.30
    assert (row.automatic.validation_loss, row.automatic.hits_at_1, row.automatic.hits_candidates) == (
        4.0,
        0.10,
        20,
    )


def test_two_versions_are_too_few_to_correlate() -> None:
    values = {"gw-1": sensible_share(3), "gw-2": sensible_share(5), "human": sensible_share(9)}
    metrics = {"gw-1": automatic(0.3, 0.4, 4.0, 0.1), "gw-2": automatic(0.7, 0.2, 3.5, 0.2)}

    result = report(list(range(10)), values, automatic=metrics)

    for correlation in result.correlations:
        assert correlation.versions == 2  # the human baseline has no automatic metrics
        assert (correlation.spearman, correlation.pearson) == (None, None)
        assert correlation.note == "needs ≥ 3 versions"
    assert result.rows[-1].human
    assert result.rows[-1].automatic is None


def test_pearson_and_spearman_on_textbook_cases() -> None:
    xs, ys = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    assert pearson(xs, ys) == pytest.approx(np.corrcoef(xs, ys)[0, 1])
    # No ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); ranks of ys: 2 1 4 3 5
    assert spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    # Ties take their mean rank: ys ranks 1, 3, 3, 3, 5
    tied = pearson([1, 2, 3, 4, 5], [1, 3, 3, 3, 5])
    assert spearman([1, 2, 3, 4, 5], [1, 2, 2, 2, 3]) == pytest.approx(tied)
    assert pearson([1, 2], [3, 3]) is None


def test_automatic_metrics_read_what_is_there_and_leave_the_rest_none() -> None:
    assert automatic_metrics({}) is None
    read = automatic_metrics({"discriminators": {"sensible": 0.5, "UNSAFE": "x"}, "hits_at_1": math.nan})
    assert read.discriminators == {"SENSIBLE": 0.5}
    assert read.hits_at_1 is None
    assert read.validation_loss is None


# --- out ------------------------------------------------------------------------------------------------


def test_csv_has_one_row_per_responder_and_metric() -> None:
    result = report(list(range(4)), {"gw-1": dict.fromkeys(range(4), ALL_YES), "human": {0: {"safety": 0}}})

    rows = report_csv_rows(result)

    assert CSV_HEADER == ("responder", "metric", "value", "low", "high", "n")
    assert len(rows) == 2 * len(METRIC_KEYS)
    assert rows[0] == ("gw-1", "sensibleness", 1.0, 1.0, 1.0, 4)
    assert ("human", "safety", 0.0, 0.0, 0.0, 1) in rows
    assert ("human", "sensibleness", "", "", "", 0) in rows


def test_json_carries_rows_comparisons_win_rates_and_correlations() -> None:
    outcomes = [("gw-2", "gw-1", 0, "a")]
    result = report([0, 1], {"gw-1": {0: ALL_YES}, "gw-2": {0: ALL_YES, 1: ALL_YES}}, outcomes=outcomes)

    body = report_json(result)

    assert body["resamples"] == 500
    assert body["seed"] == 0
    assert body["confidence"] == 0.95
    assert [m["key"] for m in body["metrics"]] == list(METRIC_KEYS)
    assert body["rows"][1]["metrics"]["ssi"] == {"estimate": 1.0, "low": 1.0, "high": 1.0, "n": 2}
    difference = body["comparisons"][0]["differences"]["sensibleness"]
    assert difference["excludes_zero"] is False
    assert difference["n"] == 1
    assert body["win_rates"][0]["a"] == "gw-2"
    assert body["win_rates"][0]["wins"] == 1
    assert body["correlations"][0]["note"] == "needs ≥ 3 versions"
