"""Training job bookkeeping without a worker: requests are checked, lost jobs are recovered or
failed, hyperparameters are validated, and the evaluation's AUC is right."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.trainer.helpers import tiny_model
from trainer import services, training
from trainer.hyperparameters import Hyperparameters
from trainer.models import DatasetVersion, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Any) -> None:
    settings.ARTIFACTS_DIR = tmp_path


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def running_job(worker: str, *, heartbeat_age: float = 0, attempts: int = 1) -> TrainingJob:
    return TrainingJob.objects.create(
        kind="pretrain",
        status="running",
        worker=worker,
        heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age),
        attempts=attempts,
        step=37,
        total_steps=100,
    )


def test_a_job_whose_process_is_gone_is_queued_again() -> None:
    job = running_job(f"{socket.gethostname()}:{dead_pid()}")

    recovered = services.training_recover()

    job.refresh_from_db()
    assert recovered == [job]
    assert job.status == "queued"
    assert job.worker == ""
    assert "was lost at step 37; queued again" in job.log


def test_a_job_of_another_host_is_lost_only_when_its_heartbeat_is_stale(settings: Any) -> None:
    fresh = running_job("elsewhere:123")
    stale = running_job("elsewhere:456", heartbeat_age=settings.TRAINING_STALE_SECONDS + 1)
    alive = running_job(f"{socket.gethostname()}:{os.getpid()}")

    services.training_recover()

    assert TrainingJob.objects.get(pk=fresh.pk).status == "running"
    assert TrainingJob.objects.get(pk=alive.pk).status == "running"
    assert TrainingJob.objects.get(pk=stale.pk).status == "queued"


def test_a_lost_job_out_of_attempts_fails_with_the_cause(settings: Any) -> None:
    job = running_job(f"{socket.gethostname()}:{dead_pid()}", attempts=settings.TRAINING_MAX_ATTEMPTS)

    services.training_recover()

    job.refresh_from_db()
    assert job.status == "failed"
    assert "was lost at step 37; out of attempts" in job.error
    assert job.finished_at is not None


def test_a_queued_job_is_cancelled_at_once_and_a_finished_one_refuses() -> None:
    job = TrainingJob.objects.create(kind="pretrain", total_steps=10)

    services.training_cancel(job=job, by="ada")

    job.refresh_from_db()
    assert job.status == "cancelled"
    assert "cancelled by ada before it started" in job.log
    with pytest.raises(services.TrainerError, match="already ended"):
        services.training_cancel(job=job)


def test_training_requests_are_checked() -> None:
    base = tiny_model()
    pretrain = DatasetVersion.objects.get(kind="pretrain")
    with pytest.raises(services.TrainerError, match="trains on quality_safety or filtered datasets"):
        services.training_request(kind="finetune_quality_safety", datasets=[pretrain])
    with pytest.raises(services.TrainerError, match="unknown hyperparameter"):
        services.training_request(kind="pretrain", datasets=[pretrain], hyperparameters={"stepz": 3})
    with pytest.raises(services.TrainerError, match="steps must be positive"):
        services.training_request(kind="pretrain", datasets=[pretrain], hyperparameters={"steps": 0})
    with pytest.raises(services.TrainerError, match="for pretrain jobs"):
        services.training_request(
            kind="finetune_quality_safety", datasets=[pretrain], hyperparameters={"model": {"d_model": 64}}
        )
    other = DatasetVersion.objects.create(
        kind="quality_safety", status="ready", directory="datasets/x", tokenizer_sha256="other"
    )
    with pytest.raises(services.TrainerError, match="another tokenizer than"):
        services.training_request(kind="finetune_quality_safety", datasets=[other], base_model=base)
    pending = DatasetVersion.objects.create(kind="pretrain")
    with pytest.raises(services.TrainerError, match="not ready"):
        services.training_request(kind="pretrain", datasets=[pending])


def test_hyperparameters_name_what_is_wrong() -> None:
    assert Hyperparameters.from_dict({"steps": "12"}).steps == 12
    with pytest.raises(ValueError, match="learning_rate: expected float, got 'fast'"):
        Hyperparameters.from_dict({"learning_rate": "fast"})
    with pytest.raises(ValueError, match="bf16: expected bool"):
        Hyperparameters.from_dict({"bf16": "yes"})


def test_bf16_unset_is_decided_by_the_cpu_that_trains_not_by_the_one_that_queues() -> None:
    unset = Hyperparameters.from_dict({})
    assert unset.bf16 is None
    assert unset.as_dict()["bf16"] is None  # what a queued job stores
    assert training.uses_bf16(unset) == training.bf16_in_hardware()
    assert Hyperparameters.from_dict({"bf16": None}).bf16 is None
    assert training.uses_bf16(Hyperparameters.from_dict({"bf16": False})) is False
    assert training.uses_bf16(Hyperparameters.from_dict({"bf16": True})) is True


def test_auc_counts_ties_half_and_needs_two_classes() -> None:
    assert training.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert training.auc([0.5, 0.5], [0, 1]) == 0.5
    assert training.auc([0.2, 0.9], [1, 1]) is None


def test_a_batch_is_padded_right_and_labels_only_where_the_mask_is_set() -> None:
    input_ids, labels = training.collate([([5, 6, 7], [0, 1, 1]), ([8], [1])], pad_id=0, max_length=2)

    assert input_ids.tolist() == [[6, 7], [8, 0]]
    assert labels.tolist() == [[6, 7], [8, -100]]
