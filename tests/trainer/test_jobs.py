"""Training job bookkeeping without a worker: requests are checked, lost jobs are recovered or
failed, hyperparameters are validated, and the evaluation's AUC is right."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import pickle
import socket
import subprocess
from datetime import timedelta
from typing import Any

import pytest
import torch
from django.utils import timezone

from tests.trainer.helpers import TINY, tiny_model
from trainer import training
from trainer.hyperparameters import Hyperparameters
from trainer.models import DatasetVersion, TrainingJob
from trainer.services import dataset_builds, requests, training_jobs, workers

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

    recovered = training_jobs.training_recover()

    job.refresh_from_db()
    assert recovered == [job]
    assert job.status == "queued"
    assert job.worker == ""
    assert "was lost at step 37; queued again" in job.log


def test_a_job_of_another_host_is_lost_only_when_its_heartbeat_is_stale(settings: Any) -> None:
    fresh = running_job("elsewhere:123")
    stale = running_job("elsewhere:456", heartbeat_age=settings.TRAINING_STALE_SECONDS + 1)
    alive = running_job(f"{socket.gethostname()}:{os.getpid()}")

    training_jobs.training_recover()

    assert TrainingJob.objects.get(pk=fresh.pk).status == "running"
    assert TrainingJob.objects.get(pk=alive.pk).status == "running"
    assert TrainingJob.objects.get(pk=stale.pk).status == "queued"


def test_a_lost_job_out_of_attempts_fails_with_the_cause(settings: Any) -> None:
    job = running_job(f"{socket.gethostname()}:{dead_pid()}", attempts=settings.TRAINING_MAX_ATTEMPTS)

    training_jobs.training_recover()

    job.refresh_from_db()
    assert job.status == "failed"
    assert "was lost at step 37; out of attempts" in job.error
    assert job.finished_at is not None


def test_a_queued_job_is_cancelled_at_once_and_a_finished_one_refuses() -> None:
    job = TrainingJob.objects.create(kind="pretrain", total_steps=10)

    requests.training_cancel(job=job, by="ada")

    job.refresh_from_db()
    assert job.status == "cancelled"
    assert "cancelled by ada before it started" in job.log
    with pytest.raises(requests.TrainerError, match="already ended"):
        requests.training_cancel(job=job)


def test_training_requests_are_checked() -> None:
    base = tiny_model()
    pretrain = DatasetVersion.objects.get(kind="pretrain")
    with pytest.raises(requests.TrainerError, match="trains on quality_safety or filtered datasets"):
        requests.training_request(kind="finetune_quality_safety", datasets=[pretrain])
    with pytest.raises(requests.TrainerError, match="unknown hyperparameter"):
        requests.training_request(kind="pretrain", datasets=[pretrain], hyperparameters={"stepz": 3})
    with pytest.raises(requests.TrainerError, match="steps: must be between 1 and 1000000, got 0"):
        requests.training_request(kind="pretrain", datasets=[pretrain], hyperparameters={"steps": 0})
    with pytest.raises(requests.TrainerError, match="for pretrain jobs"):
        requests.training_request(
            kind="finetune_quality_safety", datasets=[pretrain], hyperparameters={"model": {"d_model": 64}}
        )
    other = DatasetVersion.objects.create(
        kind="quality_safety", status="ready", directory="datasets/x", tokenizer_sha256="other"
    )
    with pytest.raises(requests.TrainerError, match="another tokenizer than"):
        requests.training_request(kind="finetune_quality_safety", datasets=[other], base_model=base)
    pending = DatasetVersion.objects.create(kind="pretrain")
    with pytest.raises(requests.TrainerError, match="not ready"):
        requests.training_request(kind="pretrain", datasets=[pending])


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


# --- dataset builds whose worker died ------------------------------------------------------------


def running_build(worker: str, *, attempts: int = 1) -> DatasetVersion:
    return DatasetVersion.objects.create(
        kind="pretrain", status="running", worker=worker, heartbeat_at=timezone.now(), attempts=attempts
    )


def test_a_build_whose_worker_is_gone_is_queued_again_and_a_live_one_is_left_alone(
    django_capture_on_commit_callbacks: Any,
) -> None:
    lost = running_build(f"{socket.gethostname()}:{dead_pid()}")
    alive = running_build(f"{socket.gethostname()}:{os.getpid()}")

    with django_capture_on_commit_callbacks() as queued:
        recovered = dataset_builds.dataset_recover()

    assert recovered == [lost]
    assert DatasetVersion.objects.get(pk=lost.pk).status == "pending"
    assert DatasetVersion.objects.get(pk=alive.pk).status == "running"
    assert len(queued) == 1  # its build task, after commit


def test_a_lost_build_out_of_attempts_fails_with_the_cause(settings: Any) -> None:
    build = running_build(f"{socket.gethostname()}:{dead_pid()}", attempts=settings.TRAINING_MAX_ATTEMPTS)

    dataset_builds.dataset_recover()

    build.refresh_from_db()
    assert build.status == "failed"
    assert "was lost; out of attempts" in build.error
    assert build.finished_at is not None


def test_a_redelivered_build_whose_worker_died_is_built_by_the_next_worker() -> None:
    """A worker process killed mid-build gives its message back (acks_late); the worker that gets
    it takes the build over rather than leave it ``running`` forever."""
    tiny_model()  # the dialogs a pretrain dataset is made of
    build = running_build(f"{socket.gethostname()}:{dead_pid()}")

    built = dataset_builds.dataset_build(dataset_id=build.pk)

    assert (built.status, built.attempts, built.error) == ("ready", 2, "")
    assert built.worker == workers.this_worker()
    assert built.done == built.total > 0


def test_a_build_whose_task_raised_outside_the_build_is_failed_with_the_cause(monkeypatch: Any) -> None:
    """The task's safety net: whatever escapes ``dataset_build`` marks the dataset failed."""
    from trainer import tasks

    build = DatasetVersion.objects.create(kind="pretrain")

    def broken(dataset_id: int, worker: str) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(dataset_builds, "_dataset_claim", broken)
    result = tasks.dataset_build_task.apply(args=[build.pk])  # as a worker runs it

    assert result.failed()
    build.refresh_from_db()
    assert (build.status, build.error) == ("failed", "RuntimeError: the database went away")


def _tiny_causal_lm() -> Any:
    from trainer.modeling import GroundworkConfig, GroundworkForCausalLM

    torch.manual_seed(0)
    return GroundworkForCausalLM(GroundworkConfig(vocab_size=50, **TINY))


def test_training_resumes_from_a_checkpoint_loaded_as_weights_only(tmp_path: Any) -> None:
    """A checkpoint holds tensors, numbers and lists only: it loads with ``weights_only=True`` and
    a run stopped after its checkpoint ends exactly as one that never stopped."""
    examples = [([1, 2, 3, 4, 5, 6], [0, 1, 1, 1, 1, 1]), ([7, 8, 9, 10], [0, 0, 1, 1])]
    hp = Hyperparameters(steps=6, batch_size=2, max_length=16, warmup_steps=2, checkpoint_every=3, bf16=False)

    def run(directory: Any, stop_at: int | None = None) -> Any:
        model = _tiny_causal_lm()

        def report(progress: training.Progress) -> bool:
            return stop_at is None or progress.step < stop_at

        with contextlib.suppress(training.Cancelled):
            training.train(model, examples, hp, pad_id=0, checkpoint_dir=directory, report=report)
        return model

    uninterrupted = run(tmp_path / "a")
    hp = dataclasses.replace(hp, report_every=0.0)
    run(tmp_path / "b", stop_at=3)  # cancelled at its first report after the checkpoint of step 3
    assert training.load_checkpoint(tmp_path / "b")["step"] == 3
    resumed = run(tmp_path / "b")

    assert training.load_checkpoint(tmp_path / "b")["step"] == 6
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Any) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_when_loaded_is_refused(tmp_path: Any) -> None:
    marker = tmp_path / "code-ran"
    torch.save(
        {"model": {}, "step": 1, "payload": _RunsCodeWhenUnpickled(marker)}, tmp_path / training.CHECKPOINT
    )

    with pytest.raises(pickle.UnpicklingError):
        training.load_checkpoint(tmp_path)

    assert not marker.exists()
