"""Krippendorff's alpha per attribute, and the per-worker record of a campaign."""

from __future__ import annotations

import json
import math
from typing import Any

import krippendorff
import numpy as np
import pytest

from annotation import agreement
from annotation.models import Item, WorkerQuality
from annotation.services import assignments, campaigns
from groundwork.roles import Role
from tests.annotation.helpers import (
    FED_QUALITIES,
    FED_SCALE,
    YES3,
    external_data,
    fed_lines,
    import_lines,
    rating,
    ssi_campaign,
)
from tests.factories import UserFactory

CODES = {"yes": 0, "no": 1, "maybe": 2}


# --- alpha from value counts (no database) ----------------------------------------------------


def test_perfect_agreement_with_variation_is_one() -> None:
    assert agreement.alpha_from_counts([[3, 0, 0], [0, 3, 0], [0, 0, 2]]) == pytest.approx(1.0)


def test_a_small_example_checked_by_hand() -> None:
    # Items: (yes, yes), (yes, no), (no, no). Coincidences: yes-yes 2, yes-no 1, no-yes 1, no-no 2;
    # n_yes = n_no = 3, n = 6. Observed disagreement D_o = 2/6; expected D_e = 2·3·3 / (6·5) = 3/5.
    # alpha = 1 - D_o / D_e = 1 - (1/3) / (3/5) = 4/9.
    assert agreement.alpha_from_counts([[2, 0, 0], [1, 1, 0], [0, 2, 0]]) == pytest.approx(4 / 9)


def test_alpha_matches_the_package_on_the_same_reliability_data() -> None:
    # Three coders (rows) × five units (columns); nan: the coder did not rate the unit.
    nan = np.nan
    reliability = np.array(
        [
            [0, 1, 2, 0, nan],
            [0, 1, 1, 0, 1],
            [nan, 1, 2, 1, 1],
        ]
    )
    counts = [[int(np.sum(column == code)) for code in range(3)] for column in reliability.T]

    assert agreement.alpha_from_counts(counts) == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )


@pytest.mark.parametrize(
    "counts",
    [
        [],
        [[5, 0, 0]],  # one item
        [[1, 0, 0], [0, 1, 0], [2, 1, 0]],  # only one item rated twice or more
        [[3, 0, 0], [5, 0, 0]],  # no variation: every answer "yes"
        [[0, 0, 2], [0, 0, 3]],
    ],
)
def test_alpha_is_none_when_it_cannot_be_computed(counts: list[list[int]]) -> None:
    assert agreement.alpha_from_counts(counts) is None


def test_items_rated_once_do_not_count() -> None:
    with_single = agreement.alpha_from_counts([[2, 0, 0], [1, 1, 0], [0, 2, 0], [1, 0, 0], [0, 1, 0]])

    assert with_single == pytest.approx(4 / 9)


# --- alpha of a campaign ----------------------------------------------------------------------


def reliability_data(ratings: dict[str, dict[str, dict[str, str]]], attribute: str) -> np.ndarray:
    """coders × items, coded values; ``ratings`` is item -> rater -> answers after the cascade."""
    items = sorted(ratings)
    raters = sorted({rater for by_rater in ratings.values() for rater in by_rater})
    data = np.full((len(raters), len(items)), np.nan)
    for column, item in enumerate(items):
        for row, rater in enumerate(raters):
            answers = ratings[item].get(rater)
            if answers is not None:
                data[row, column] = CODES[answers[attribute]]
    return data


@pytest.mark.django_db
def test_campaign_alpha_is_the_packages_alpha_of_the_stored_judgments() -> None:
    campaign = campaigns.campaign_create(name="alpha", kind="ssi", empty=True)
    no = {"sensible": "no"}
    sure = {"sensible": "yes", "specific": "no"}
    given = {
        "a": {"r1": YES3, "r2": YES3, "r3": sure},
        "b": {"r1": no, "r2": no, "r3": no, "r4": YES3},
        "c": {"r2": sure, "r4": {"sensible": "maybe"}},
        "d": {"r1": YES3},  # rated once: not pairable
    }
    import_lines(
        campaign,
        *[
            obj
            for key, by_rater in given.items()
            for rater, answers in by_rater.items()
            for obj in rating(key, rater, answers)
        ],
    )
    # Gold items are not part of agreement.
    Item.objects.filter(key="c").update(kind=Item.Kind.GOLD)
    del given["c"]
    cascaded = {
        key: {
            rater: {**dict.fromkeys(("specific", "interesting"), "no"), **answers}
            for rater, answers in by_rater.items()
        }
        for key, by_rater in given.items()
    }

    alphas = agreement.campaign_alpha(campaign=campaign)

    assert list(alphas) == ["sensible", "specific", "interesting"]
    for attribute in ("sensible", "specific"):
        expected = krippendorff.alpha(
            reliability_data=reliability_data(cascaded, attribute), level_of_measurement="nominal"
        )
        assert alphas[attribute] == pytest.approx(expected), attribute


@pytest.mark.django_db
def test_campaign_alpha_of_fed_annotators_matches_the_package_on_the_raw_file() -> None:
    entries = json.loads((external_data() / "fed_data.json").read_text())
    chosen = [(index, entry) for index, entry in enumerate(entries) if "response" in entry][:16]
    campaign = campaigns.campaign_create(name="fed", kind="ssi", empty=True)
    import_lines(campaign, *[obj for index, entry in chosen for obj in fed_lines(index, entry)])
    # Sensible ("Semantically appropriate" in FED) is always asked: its alpha is the raw annotations'.
    reliability = np.array(
        [
            [CODES[FED_SCALE[score]] for score in entry["annotations"][FED_QUALITIES["sensible"]]]
            for _, entry in chosen
        ]
    ).T

    alpha = agreement.campaign_alpha(campaign=campaign)["sensible"]

    assert alpha == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )
    assert math.isfinite(alpha)


@pytest.mark.django_db
def test_a_safety_campaign_has_one_alpha_per_objective_and_none_without_judgments() -> None:
    campaign = campaigns.campaign_create(name="safe", kind="safety", empty=True, objectives=["harm", "bias"])

    assert agreement.campaign_alpha(campaign=campaign) == {"harm": None, "bias": None}


@pytest.mark.django_db
def test_campaign_alpha_is_one_query(django_assert_num_queries) -> None:
    campaign = campaigns.campaign_create(name="q", kind="ssi", empty=True)
    import_lines(campaign, *[obj for n in range(10) for obj in rating(f"k{n}", f"r{n % 3}", YES3)])

    with django_assert_num_queries(1):
        agreement.campaign_alpha(campaign=campaign)


# --- workers ----------------------------------------------------------------------------------


def rate_all(campaign: Any, worker: Any, answers: dict[str, str]) -> None:
    while (lease := assignments.assignment_lease_next(worker=worker, campaign=campaign)) is not None:
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=answers)


@pytest.mark.django_db
def test_campaign_workers_counts_items_rated_and_gold_accuracy(django_assert_num_queries) -> None:
    campaign = ssi_campaign(items=3, raters=2, name="workers")
    busy, idle, blocked = (UserFactory(role=Role.CROWDWORKER) for _ in range(3))
    rate_all(campaign, busy, YES3)
    lease = assignments.assignment_lease_next(worker=idle, campaign=campaign)
    assignments.judgment_submit(assignment_id=lease.pk, worker=idle, answers=YES3)
    WorkerQuality.objects.create(campaign=campaign, worker=busy, gold_seen=4, gold_correct=3)
    WorkerQuality.objects.create(campaign=campaign, worker=blocked, gold_seen=5, gold_correct=1, blocked=True)

    with django_assert_num_queries(3):
        records, total = agreement.campaign_workers(campaign=campaign)

    assert total == 3
    assert [(r.username, r.rated, r.gold_seen, r.gold_accuracy, r.blocked) for r in records] == [
        (busy.username, 3, 4, 0.75, False),
        (idle.username, 1, 0, None, False),
        (blocked.username, 0, 5, 0.2, True),
    ]
    assert agreement.campaign_workers(campaign=campaign, limit=1)[0][0].username == busy.username
