"""The benchmark's figures (``make bench``) at a small size: what each part counts and the goal it
is measured against."""

from __future__ import annotations

import pytest

from annotation.models import Campaign, ConsensusLabel
from bench.annotation_aggregate import bench_aggregate
from bench.httpload import LoadResult, Rater


def test_submit_counts_the_submissions_that_arrived_in_the_window_with_their_own_assignments() -> None:
    rater = Rater(worker_id=1, token="t")
    # (arrival, latency, status): a 201 in the warm-up, a 409, two 201s in the window, one after.
    rater.submits = [(0.5, 0.01, 201), (1.5, 0.01, 409), (2.0, 0.01, 201), (2.5, 0.01, 201), (4.0, 0.01, 201)]
    rater.accepted = [10, 11, 12, 13]
    other = Rater(worker_id=2, token="u")
    other.submits = [(1.2, 0.01, 201)]
    other.accepted = [20]

    result = LoadResult([rater, other], measure_from=1.0, measure_to=3.0)

    assert sorted(result.accepted_ids_in_window()) == [11, 12, 20]


@pytest.mark.django_db(transaction=True)
def test_aggregate_times_a_first_computation_writing_every_label_and_a_recomputation() -> None:
    metrics = {metric.name: metric for metric in bench_aggregate(judgments=1_500, runs=2)}

    campaign = Campaign.objects.get(name="bench aggregate")
    assert campaign.items.count() == 100  # 100 items x 5 raters x 3 attributes
    assert ConsensusLabel.objects.filter(item__campaign=campaign).count() == 300
    assert metrics["aggregate.judgments"].value == 1_500
    assert metrics["aggregate.first_ratio_to_bare_group_by"].goal == "≤ 3"
    assert metrics["aggregate.recompute_ratio_to_bare_group_by"].goal == "≤ 2"
    first, recompute = metrics["aggregate.first_s"].value, metrics["aggregate.recompute_s"].value
    bare = metrics["aggregate.bare_group_by_s"].value
    assert metrics["aggregate.first_ratio_to_bare_group_by"].value == pytest.approx(first / bare)
    assert metrics["aggregate.recompute_ratio_to_bare_group_by"].value == pytest.approx(recompute / bare)
