"""The evaluation benchmark (``make bench``, part ``evaluate``) at a small size: both ways answer
through the real service, and the speedup is the ratio of their rates, against its goal."""

from __future__ import annotations

from typing import Any

import pytest

from bench.evaluation_bench import bench_evaluate
from dialogs.models import EvaluationResponse
from trainer.models import Evaluation

TINY = {"d_model": 32, "n_layer": 2, "n_head": 2, "d_ff": 64}


@pytest.mark.django_db
def test_the_evaluation_bench_answers_the_set_batched_and_a_sample_one_at_a_time(
    settings: Any, tmp_path: Any
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    settings.INFERENCE_MAX_NEW_TOKENS = 4

    metrics = {metric.name: metric for metric in bench_evaluate(contexts=12, single=4, model=TINY)}

    batched, alone = Evaluation.objects.order_by("pk")
    assert (batched.status, batched.done, alone.status, alone.done) == ("done", 12, "done", 4)
    assert EvaluationResponse.objects.count() == 16
    assert metrics["evaluate.speedup"].goal == "≥ 3"
    assert metrics["evaluate.speedup"].value == pytest.approx(
        metrics["evaluate.batched_contexts_per_second"].value
        / metrics["evaluate.one_at_a_time_contexts_per_second"].value
    )
    assert metrics["evaluate.batched_contexts_per_second"].value == batched.metrics["contexts_per_second"]
    assert (metrics["evaluate.contexts"].value, metrics["evaluate.one_at_a_time_contexts"].value) == (12, 4)
