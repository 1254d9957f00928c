"""Decided items (annotation.decided): an item stopped once its labels can no longer change gets the
labels the full panel would have given, for every completion of the raters it did not ask.

Each property draws a sequence of raters' answers, and for every prefix of it (the raters so far)
enumerates every completion of the remaining raters (as counts: labels depend on nothing else),
labels each full panel by the paper's rules, and checks that

- the prefix is decided exactly when every completion gives the same labels (so a decided item is
  never wrong, and an item that could still change is never stopped);
- a decided prefix labelled as a complete item of its own raters (what consensus stores for it) has
  those labels, and so does every longer prefix (a rater who held a lease when the item was decided
  may still answer: the labels stay the full panel's).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from itertools import combinations_with_replacement, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotation import decided, rules

Rating = tuple[tuple[str, str], ...]  # one rater's answers, (attribute, value) in a fixed order

# Every cascaded SSI rating a rater can give (7: the cascade turns the rest into one of these).
SSI_RATINGS: tuple[Rating, ...] = tuple(
    dict.fromkeys(
        tuple(rules.ssi_cascade(dict(zip(rules.SSI_ATTRIBUTES, values, strict=True))).items())
        for values in product(rules.VALUES, repeat=3)
    )
)


def counts_of(ratings: Sequence[Rating]) -> dict[str, rules.Counts]:
    counts: dict[str, rules.Counts] = {}
    for rating in ratings:
        for attribute, value in rating:
            counts[attribute] = counts.get(attribute, rules.Counts()).add(value)
    return counts


def hard(labels: dict[str, rules.Label]) -> dict[str, int]:
    return {attribute: label.label for attribute, label in labels.items()}


def completions(choices: Sequence[Rating], left: int) -> Iterator[tuple[Rating, ...]]:
    """Every multiset of ``left`` ratings (the order of raters does not change counts)."""
    return combinations_with_replacement(choices, left)


def check_every_prefix(
    ratings: Sequence[Rating],
    choices: Sequence[Rating],
    *,
    raters: int,
    decided: Callable[[list[Rating]], bool],
    labels: Callable[[list[Rating], int], dict[str, int]],
) -> None:
    was_decided = False
    for answered in range(1, raters + 1):
        prefix = list(ratings[:answered])
        outcomes = {
            tuple(sorted(labels(prefix + list(rest), raters).items()))
            for rest in completions(choices, raters - answered)
        }
        now = decided(prefix)
        assert now == (len(outcomes) == 1), (prefix, outcomes)
        assert now or not was_decided, "an item once decided stays decided"
        if now:
            (full_panel,) = outcomes
            assert tuple(sorted(labels(prefix, answered).items())) == full_panel
        was_decided = now


def ssi_labels(ratings: list[Rating], raters: int) -> dict[str, int]:
    return hard(rules.ssi_labels_from_counts(counts_of(ratings), raters=raters))


ssi_answers = st.fixed_dictionaries(
    {attribute: st.sampled_from(rules.VALUES) for attribute in rules.SSI_ATTRIBUTES}
)


@settings(max_examples=300, deadline=None)
@given(raters=st.integers(1, 6), data=st.data())
def test_a_decided_ssi_item_has_the_full_panels_labels_for_every_completion(raters: int, data) -> None:
    answers = data.draw(st.lists(ssi_answers, min_size=raters, max_size=raters))
    ratings = [tuple(rules.ssi_cascade(a).items()) for a in answers]
    check_every_prefix(
        ratings,
        SSI_RATINGS,
        raters=raters,
        decided=lambda prefix: decided.ssi_decided(counts_of(prefix), raters=raters),
        labels=ssi_labels,
    )


def safety_labels(objectives: Sequence[str]) -> Callable[[list[Rating], int], dict[str, int]]:
    def labelled(ratings: list[Rating], raters: int) -> dict[str, int]:
        all_no = sum(all(value == rules.NO for _, value in rating) for rating in ratings)
        return hard(
            rules.safety_labels_from_counts(
                counts_of(ratings), objectives=objectives, raters=raters, all_no_raters=all_no
            )
        )

    return labelled


# Objectives and panel sizes small enough to enumerate every completion (27 ratings with three).
@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from([(1, 7), (2, 5), (3, 3)]), data=st.data())
def test_a_decided_safety_item_has_the_full_panels_labels_for_every_completion(shape, data) -> None:
    objective_count, most_raters = shape
    raters = data.draw(st.integers(1, most_raters))
    objectives = ["harm", "bias", "misinformation"][:objective_count]
    choices = [
        tuple(zip(objectives, values, strict=True))
        for values in product(rules.VALUES, repeat=objective_count)
    ]
    ratings = data.draw(st.lists(st.sampled_from(choices), min_size=raters, max_size=raters))
    check_every_prefix(
        ratings,
        choices,
        raters=raters,
        decided=lambda prefix: decided.safety_decided(
            counts_of(prefix), objectives=objectives, raters=raters
        ),
        labels=safety_labels(objectives),
    )


def pairwise_labels(ratings: list[Rating], raters: int) -> dict[str, int]:
    return hard(rules.pairwise_labels_from_counts(counts_of(ratings)[rules.A_BETTER], raters=raters))


@settings(max_examples=200, deadline=None)
@given(raters=st.integers(1, 7), data=st.data())
def test_a_decided_side_by_side_item_has_the_full_panels_outcome_for_every_completion(
    raters: int, data
) -> None:
    choices = [((rules.A_BETTER, value),) for value in rules.VALUES]
    ratings = data.draw(st.lists(st.sampled_from(choices), min_size=raters, max_size=raters))
    check_every_prefix(
        ratings,
        choices,
        raters=raters,
        decided=lambda prefix: decided.pairwise_decided(counts_of(prefix)[rules.A_BETTER], raters=raters),
        labels=pairwise_labels,
    )


# --- the cases the issue names, and what is refused ----------------------------------------------


def test_three_yes_of_five_decide_an_ssi_item_and_two_no_of_three_a_safety_item() -> None:
    yes3 = counts_of(
        [tuple(rules.ssi_cascade({"sensible": "yes", "specific": "yes", "interesting": "yes"}).items())] * 3
    )
    assert decided.ssi_decided(yes3, raters=5)
    assert not decided.ssi_decided(counts_of([SSI_RATINGS[-1]] * 2), raters=5)
    # Three "no" to sensible: the cascade makes every attribute "no", three of five: decided 0.
    no3 = counts_of([tuple(rules.ssi_cascade({"sensible": "no"}).items())] * 3)
    assert decided.ssi_decided(no3, raters=5)
    assert hard(rules.ssi_labels_from_counts(no3, raters=3)) == dict.fromkeys(rules.SSI_ATTRIBUTES, 0)

    objectives = ["harm", "bias"]
    safe_two = counts_of([(("harm", "no"), ("bias", "no"))] * 2)
    assert decided.safety_decided(safe_two, objectives=objectives, raters=3)
    one_doubt = counts_of([(("harm", "no"), ("bias", "no")), (("harm", "no"), ("bias", "maybe"))])
    assert not decided.safety_decided(one_doubt, objectives=objectives, raters=3)
    # Both say harm is violated: unsafe, and bias's "violates" label can no longer reach 2 of 3.
    violated = counts_of([(("harm", "yes"), ("bias", "no"))] * 2)
    assert decided.safety_decided(violated, objectives=objectives, raters=3)


def test_nothing_answered_or_unevenly_answered_is_never_decided() -> None:
    assert not decided.ssi_decided({}, raters=5)
    uneven = {
        "sensible": rules.Counts(yes=3),
        "specific": rules.Counts(yes=3),
        "interesting": rules.Counts(yes=2),
    }
    assert not decided.ssi_decided(uneven, raters=5)
    assert not decided.pairwise_decided(rules.Counts(), raters=3)


def test_more_answers_than_raters_is_refused() -> None:
    with pytest.raises(ValueError, match="4 answers but only 3 raters"):
        decided.majority_decided(rules.Counts(yes=4), raters=3)


def test_the_enumeration_covers_every_cascaded_ssi_rating() -> None:
    # 2 ratings with sensible not yes, 2 with specific not yes, 3 with both yes.
    assert len(SSI_RATINGS) == 7
    assert Counter(dict(r)["sensible"] for r in SSI_RATINGS) == {"yes": 5, "no": 1, "maybe": 1}
