"""Data-parallel training (issue 16): 2 gloo processes on the CPU follow the 1-process loss curve,
hear a cancellation and resume from rank 0's checkpoint; a world_size=2 job runs through the real
training worker and records where it trained.

The tolerance: the 2-process run computes the same global batch's mean loss and gradients as the
1-process run, summed in another order (each rank sums its rows, gloo adds the two halves), so the
two differ by float32 rounding only (about 1e-7 relative a step, observed: losses equal to the 5
decimals the history keeps, weights within 1e-7 after 12 AdamW steps). We allow 1e-4 on each
step's loss and 1e-5 on every weight: 100x above what the rounding gives, while a run that got
its share of the batch or the loss scaling wrong (each rank's own mean averaged, say) drifts by
1e-3 and more within these steps.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from rest_framework.test import APIClient

from tests.trainer.helpers import TINY, tiny_model
from tests.trainer.test_training import job_ended, wait_for
from trainer import distributed, training
from trainer.hyperparameters import HyperparameterError, Hyperparameters
from trainer.modeling import GroundworkConfig, model_init
from trainer.models import DatasetVersion, ModelVersion
from trainer.services import requests

LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-5


def _examples(count: int = 64, seed: int = 1) -> list[training.Pair]:
    """Rows of different lengths and loss masks, so the two ranks' shares hold different numbers
    of loss tokens (what the loss scaling must get right)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        length = rng.randint(4, 40)
        cut = rng.randint(1, length - 1)
        rows.append(([rng.randrange(3, 60) for _ in range(length)], [0] * cut + [1] * (length - cut)))
    return rows


def _run(world_size: int, folder: Path, *, steps: int = 12, stop_after: int | None = None) -> Any:
    config = GroundworkConfig(
        vocab_size=64, pad_token_id=0, eos_token_id=1, d_model=32, n_layer=2, n_head=2, d_ff=64
    )
    model = model_init(config, seed=0)
    hp = Hyperparameters.from_dict(
        {
            "steps": steps,
            "batch_size": 8,
            "max_length": 32,
            "warmup_steps": 2,
            "checkpoint_every": 4,
            "report_every": 0.1,
            "bf16": False,  # the same precision for both, whatever this CPU has
            "world_size": world_size,
        }
    )

    def report(progress: training.Progress) -> bool:
        if stop_after is None:
            return True
        time.sleep(hp.report_every)  # so the next step reports too, however fast steps are
        return progress.step < stop_after

    def checkpointed(step: int) -> None:
        if stop_after is not None:
            time.sleep(hp.report_every)  # so the step of the first checkpoint reports

    progress = distributed.run(
        model,
        _examples(),
        hp,
        pad_id=0,
        checkpoint_dir=folder,
        report=report,
        on_checkpoint=checkpointed,
        device=torch.device("cpu"),
    )
    return progress, model


def test_two_gloo_processes_follow_the_one_process_loss_curve(tmp_path: Path) -> None:
    one, one_model = _run(1, tmp_path / "one")
    two, two_model = _run(2, tmp_path / "two")

    assert [step for step, _ in two.history] == list(range(1, 13))
    differences = [abs(a - b) for (_, a), (_, b) in zip(one.history, two.history, strict=True)]
    assert max(differences) <= LOSS_TOLERANCE, differences
    assert one.history[-1][1] < one.history[0][1]  # it learns: the curves compared are not flat
    weights = max(
        float((a.detach() - b.detach()).abs().max())
        for a, b in zip(one_model.parameters(), two_model.parameters(), strict=True)
    )
    assert weights <= WEIGHT_TOLERANCE
    assert two.average_tokens_per_second > 0


def test_a_cancellation_reaches_every_rank_and_the_run_resumes_from_rank_0s_checkpoint(
    tmp_path: Path,
) -> None:
    """Cancelled at step 6 (checkpoint at step 4; from step 4 on, every step reports): every
    rank stops (else the call would hang on
    the next collective); the next 2-process run resumes from the checkpoint and ends on the
    uninterrupted 1-process curve."""
    with pytest.raises(training.Cancelled, match="cancelled at step 6"):
        _run(2, tmp_path / "two", stop_after=6)
    checkpoint = training.load_checkpoint(tmp_path / "two")
    assert checkpoint is not None
    assert checkpoint["step"] == 4
    assert checkpoint["tokens"] > 0
    assert checkpoint["seconds"] > 0

    resumed, _ = _run(2, tmp_path / "two")
    straight, _ = _run(1, tmp_path / "one")

    assert [step for step, _ in resumed.history] == list(range(1, 13))
    differences = [abs(a - b) for (_, a), (_, b) in zip(straight.history, resumed.history, strict=True)]
    assert max(differences) <= LOSS_TOLERANCE, differences


def test_a_batch_size_the_world_size_does_not_divide_is_refused() -> None:
    with pytest.raises(HyperparameterError, match="batch_size: must be divisible by world_size"):
        Hyperparameters.from_dict({"batch_size": 6, "world_size": 4})
    with pytest.raises(HyperparameterError, match="world_size: must be between 1 and 64"):
        Hyperparameters.from_dict({"world_size": 0})
    assert Hyperparameters.from_dict({}).world_size == 1


@pytest.mark.django_db(transaction=True)
def test_a_world_size_2_job_trains_through_the_worker_and_records_its_device(
    training_worker: subprocess.Popen, users: Any
) -> None:
    tiny_model()
    dataset = DatasetVersion.objects.filter(kind="pretrain", status="ready").first()
    job = requests.training_request(
        kind="pretrain",
        datasets=[dataset],
        hyperparameters={
            "steps": 12,
            "batch_size": 8,
            "checkpoint_every": 5,
            "report_every": 0.2,
            "world_size": 2,
            "model": TINY,
        },
    )
    job = wait_for(lambda: job_ended(job.pk), what="the training job")

    assert job.status == "succeeded", job.error + job.log
    assert job.device == "cpu x2"
    assert job.precision in ("fp32", "bf16")
    assert f"training on cpu x2 in {job.precision}" in job.log
    assert job.average_tokens_per_second
    assert job.average_tokens_per_second > 0
    assert [step for step, _ in job.history] == list(range(1, 13))
    version = ModelVersion.objects.get(job=job)
    assert (version.device, version.precision) == ("cpu x2", job.precision)
    assert version.metrics["average_tokens_per_second"] == job.average_tokens_per_second

    client = APIClient()
    client.force_login(users["researcher"])
    shown = client.get(f"/api/v1/training-jobs/{job.pk}/").json()
    assert (shown["device"], shown["precision"]) == ("cpu x2", job.precision)
    assert shown["average_tokens_per_second"] == job.average_tokens_per_second
    listed = client.get(f"/api/v1/models/{version.pk}/").json()
    assert (listed["device"], listed["precision"]) == ("cpu x2", job.precision)
