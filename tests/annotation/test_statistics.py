"""annotation.statistics: bootstrap intervals over contexts, paired differences, win rates.

Known cases (all-yes is [1, 1]; the Wilson intervals of Newcombe 1998's Table II; a bootstrap
interval on a large sample beside the normal approximation), the seed rule, and the fast
implementation (lanes of big integers) against a plain one that resamples with the same draws.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Mapping, Sequence

import pytest

from annotation.statistics import (
    MIN_FLAGGED_CONTEXTS,
    ContextResamples,
    bootstrap_interval,
    paired_bootstrap_difference,
    percentile,
    wilson_interval,
    win_rate,
)


def plain_bootstrap(
    contexts: Sequence[Hashable],
    metrics: Sequence[Mapping[Hashable, float]],
    *,
    resamples: int,
    seed: int,
    difference: bool = False,
) -> tuple[float, float]:
    """The percentile bootstrap written out: the same draws as ``ContextResamples`` (for each
    resample, ``len(contexts)`` times ``int(random() * n)``), each resample's mean over the drawn
    contexts that have a value, the 2.5th and 97.5th percentiles."""
    rng = random.Random(seed)
    n = len(contexts)
    keys = [k for k in metrics[0] if all(k in m for m in metrics)]
    stats = []
    for _ in range(resamples):
        drawn = [contexts[int(rng.random() * n)] for _ in range(n)]
        with_value = [k for k in drawn if k in keys]
        if not with_value:
            continue
        means = [sum(m[k] for k in with_value) / len(with_value) for m in metrics]
        stats.append(means[0] - means[1] if difference else means[0])
    stats.sort()
    return percentile(stats, 0.025), percentile(stats, 0.975)


# --- known cases --------------------------------------------------------------------------------


def test_all_yes_gives_one_to_one_and_all_no_zero_to_zero() -> None:
    ones = bootstrap_interval([1] * 40)
    zeros = bootstrap_interval([0] * 40)

    assert (ones.estimate, ones.low, ones.high, ones.n) == (1, 1, 1, 40)
    assert (zeros.estimate, zeros.low, zeros.high, zeros.n) == (0, 0, 0, 40)


def test_no_values_give_no_interval() -> None:
    resamples = ContextResamples(["a", "b"])

    assert bootstrap_interval([]) is None
    assert bootstrap_interval({}) is None
    assert resamples.interval({}) is None
    assert resamples.difference({"a": 1}, {"b": 1}) is None  # no shared context
    assert paired_bootstrap_difference({}, {"a": 1}) is None
    assert win_rate(wins=0, ties=0, losses=0) is None


def test_the_same_values_and_seed_give_the_same_interval_and_another_seed_another() -> None:
    rng = random.Random(3)
    values = [int(rng.random() < 0.4) for _ in range(150)]

    first = bootstrap_interval(values, seed=7)
    again = bootstrap_interval(values, seed=7)
    other = bootstrap_interval(values, seed=8)

    assert first == again
    assert other != first
    assert other.estimate == first.estimate


@pytest.mark.parametrize(
    ("successes", "total", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table II, method 3.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombes_table(successes: int, total: int, low: float, high: float) -> None:
    found = wilson_interval(successes, total)

    assert found == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_a_bootstrap_interval_on_a_large_sample_agrees_with_the_normal_approximation() -> None:
    rng = random.Random(11)
    values = [int(rng.random() < 0.3) for _ in range(2_000)]
    mean = sum(values) / len(values)
    half = 1.959964 * math.sqrt(mean * (1 - mean) / len(values))  # about 0.02

    found = bootstrap_interval(values, seed=1)

    assert found.estimate == pytest.approx(mean)
    assert found.low == pytest.approx(mean - half, abs=0.003)
    assert found.high == pytest.approx(mean + half, abs=0.003)


# --- paired differences -------------------------------------------------------------------------


def test_identical_versions_differ_by_zero_to_zero_and_are_not_flagged() -> None:
    rng = random.Random(5)
    a = {f"c{i}": rng.choice([0, 1 / 3, 2 / 3, 1]) for i in range(120)}

    difference = paired_bootstrap_difference(a, dict(a))

    assert (difference.estimate, difference.low, difference.high, difference.n) == (0, 0, 0, 120)
    assert not difference.excludes_zero


def test_a_clear_improvement_is_flagged_and_a_coin_flip_is_not() -> None:
    rng = random.Random(6)
    old = {i: int(rng.random() < 0.4) for i in range(200)}
    new = {i: int(rng.random() < 0.8) for i in range(200)}
    same_odds = {i: int(rng.random() < 0.4) for i in range(200)}

    better = paired_bootstrap_difference(new, old)
    worse = paired_bootstrap_difference(old, new)
    alike = paired_bootstrap_difference(same_odds, old)

    assert better.excludes_zero
    assert better.low > 0.2
    assert worse.excludes_zero
    assert worse.high < -0.2
    assert not alike.excludes_zero


def test_pairing_finds_a_small_consistent_gain_that_two_separate_intervals_would_miss() -> None:
    """B answers 12 of 200 contexts better than A and every other context the same: the
    separate intervals overlap almost entirely, the paired one excludes 0."""
    rng = random.Random(9)
    a = {i: int(rng.random() < 0.5) for i in range(200)}
    improved = [i for i in a if a[i] == 0][:12]
    b = {i: 1 if i in improved else a[i] for i in a}

    difference = paired_bootstrap_difference(b, a)
    a_alone, b_alone = bootstrap_interval(a), bootstrap_interval(b)

    assert difference.estimate == pytest.approx(12 / 200)
    assert difference.excludes_zero
    assert a_alone.high > b_alone.low  # the separate intervals overlap


def test_a_difference_is_over_the_shared_contexts_only() -> None:
    a = {"x": 1, "y": 1, "z": 1}
    b = {"y": 0, "z": 0, "w": 1}

    difference = paired_bootstrap_difference(a, b)

    assert (difference.estimate, difference.n) == (1, 2)
    assert (difference.low, difference.high) == (1, 1)


# --- one set's resamples, many metrics ----------------------------------------------------------


def test_a_metric_on_part_of_the_set_is_its_mean_there() -> None:
    contexts = [f"c{i}" for i in range(60)]
    resamples = ContextResamples(contexts)
    safety_only = {c: 1 for c in contexts[:20]}

    found = resamples.interval(safety_only)

    assert (found.estimate, found.low, found.high, found.n) == (1, 1, 1, 20)


@pytest.mark.parametrize(
    "kind",
    ["labels", "thirds", "part of the set", "continuous", "difference of labels", "difference of thirds"],
)
def test_the_fast_bootstrap_equals_the_plain_one_with_the_same_draws(kind: str) -> None:
    rng = random.Random(kind)
    contexts = [f"c{i}" for i in range(37)]
    draw = {
        "labels": lambda: rng.randint(0, 1),
        "thirds": lambda: rng.choice([0, 1 / 3, 2 / 3, 1]),
        "part of the set": lambda: rng.randint(0, 1),
        "continuous": rng.random,
        "difference of labels": lambda: rng.randint(0, 1),
        "difference of thirds": lambda: rng.choice([0, 1 / 3, 2 / 3, 1]),
    }[kind]
    keep = contexts[5:30] if kind == "part of the set" else contexts
    a = {c: draw() for c in keep}
    b = {c: draw() for c in contexts[::2]}
    fast = ContextResamples(contexts, resamples=300, seed=4)

    if kind.startswith("difference"):
        found = fast.difference(a, b)
        expected = plain_bootstrap(contexts, [a, b], resamples=300, seed=4, difference=True)
    else:
        found = fast.interval(a)
        expected = plain_bootstrap(contexts, [a], resamples=300, seed=4)

    assert (found.low, found.high) == (pytest.approx(expected[0]), pytest.approx(expected[1]))


def test_values_must_be_numbers_of_the_sets_contexts() -> None:
    resamples = ContextResamples(["a", "b"], resamples=10)

    with pytest.raises(ValueError, match="'c' is not one of this set's contexts"):
        resamples.interval({"a": 1, "c": 1})
    with pytest.raises(ValueError, match="not a finite number"):
        resamples.interval({"a": math.nan})
    with pytest.raises(ValueError, match="named twice"):
        ContextResamples(["a", "a"])
    with pytest.raises(ValueError, match="confidence"):
        resamples.interval({"a": 1}, confidence=1.5)


def test_a_narrower_confidence_gives_a_narrower_interval() -> None:
    rng = random.Random(2)
    values = [int(rng.random() < 0.5) for _ in range(300)]

    wide = bootstrap_interval(values, confidence=0.99)
    narrow = bootstrap_interval(values, confidence=0.8)

    assert wide.low < narrow.low < narrow.high < wide.high


# --- win rates ----------------------------------------------------------------------------------


def test_a_win_rate_counts_ties_half_with_the_wilson_interval() -> None:
    rate = win_rate(wins=60, ties=30, losses=10)

    assert rate.rate == pytest.approx(0.75)
    assert (rate.low, rate.high) == wilson_interval(75, 100)
    assert rate.total == 100
    assert rate.excludes_even


def test_an_even_comparison_is_not_a_preference() -> None:
    rate = win_rate(wins=10, ties=20, losses=10)

    assert rate.rate == 0.5
    assert rate.low < 0.5 < rate.high
    assert not rate.excludes_even


def test_wilson_81_of_263_as_a_win_rate() -> None:
    rate = win_rate(wins=81, ties=0, losses=182)

    assert (rate.low, rate.high) == (pytest.approx(0.2553, abs=5e-5), pytest.approx(0.3662, abs=5e-5))
    assert rate.excludes_even


def test_counts_must_be_counts() -> None:
    with pytest.raises(ValueError, match="wins"):
        win_rate(wins=-1, ties=0, losses=2)
    with pytest.raises(ValueError, match="total"):
        wilson_interval(0, 0)


def test_a_difference_on_too_few_contexts_is_never_flagged() -> None:
    """One shared context gives the interval [d, d]: it leaves out 0 but says nothing; from
    MIN_FLAGGED_CONTEXTS contexts of the same clear gain on, it is flagged."""
    one = paired_bootstrap_difference({"c": 1}, {"c": 0})
    few = paired_bootstrap_difference(
        {i: 1 for i in range(MIN_FLAGGED_CONTEXTS - 1)}, {i: 0 for i in range(MIN_FLAGGED_CONTEXTS - 1)}
    )
    enough = paired_bootstrap_difference(
        {i: 1 for i in range(MIN_FLAGGED_CONTEXTS)}, {i: 0 for i in range(MIN_FLAGGED_CONTEXTS)}
    )

    assert (one.estimate, one.low, one.high, one.n) == (1, 1, 1, 1)
    assert not one.excludes_zero
    assert few.low == 1
    assert not few.excludes_zero
    assert enough.low == 1
    assert enough.excludes_zero
