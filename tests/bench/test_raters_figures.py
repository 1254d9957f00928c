"""The raters benchmark (``make bench``, part ``raters``) at a small size: the synthetic crowd is
what it says, both aggregations run through the real services, and the figures are theirs."""

from __future__ import annotations

import pytest

from annotation.models import Judgment, RaterAwareLabel, RaterModelRun
from bench.raters_bench import bench_raters


@pytest.mark.django_db(transaction=True)  # the bench VACUUMs, outside a transaction
def test_the_raters_bench_times_dawid_skene_against_the_majority_and_scores_both_on_the_truth() -> None:
    metrics = {metric.name: metric.value for metric in bench_raters(judgments=3000, pool=40, runs=1)}

    assert metrics["raters.judgments"] == Judgment.objects.count() == 3000
    # Every item has 5 different raters.
    per_item = (
        Judgment.objects.filter(attribute="sensible").values("item_id", "assignment__worker_id").distinct()
    )
    assert per_item.count() == 1000
    assert RaterAwareLabel.objects.count() == 200 * 3
    run = RaterModelRun.objects.get()
    assert run.status == RaterModelRun.Status.DONE
    assert metrics["raters.dawid_skene_ratio_to_majority_first"] == pytest.approx(
        metrics["raters.dawid_skene_s"] / metrics["raters.majority_first_s"]
    )
    # 60 % careful raters at 90 %, the rest at 60 %: a 5-rater majority is right about 9 times in 10.
    assert 0.8 < metrics["raters.majority_right"] < 1
    assert 0.8 < metrics["raters.dawid_skene_right"] <= 1
    assert metrics["raters.agreement_lowest_attribute"] == min(run.agreement.values())
