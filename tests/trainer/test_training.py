"""Training jobs on a real worker (issue 5): a fine-tune through the API lowers the validation
loss and gives a model version with lineage; a worker process killed with SIGKILL mid-job is
recovered from the checkpoint, or the job fails with the cause; a job can be cancelled."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.trainer.helpers import TINY, labelled_campaigns, tiny_model
from trainer.models import DatasetVersion, ModelVersion, TrainingJob
from trainer.services import requests

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(condition: Callable[[], Any], timeout: float = 180, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def job_ended(job_id: int) -> TrainingJob | None:
    job = TrainingJob.objects.get(pk=job_id)
    return job if job.finished else None


@pytest.fixture
def researcher(users: dict[Any, Any]) -> APIClient:
    client = APIClient()
    client.force_login(users["researcher"])
    return client


def pretrain_job(steps: int, checkpoint_every: int) -> TrainingJob:
    dataset = DatasetVersion.objects.filter(kind="pretrain", status="ready").first()
    return requests.training_request(
        kind="pretrain",
        datasets=[dataset],
        hyperparameters={
            "steps": steps,
            "checkpoint_every": checkpoint_every,
            "report_every": 0.2,
            "model": TINY,
        },
    )


def test_a_fine_tune_through_the_api_lowers_the_validation_loss(
    celery_worker: None, training_worker: subprocess.Popen, researcher: APIClient
) -> None:
    base = tiny_model(steps=20)
    ssi, safety = labelled_campaigns(items=40)

    answer = researcher.post(
        "/api/v1/datasets/",
        {"kind": "quality_safety", "campaigns": [ssi.pk, safety.pk], "validation_percent": 30},
        format="json",
    )
    assert answer.status_code == 202, answer.content
    dataset_id = answer.json()["id"]
    dataset = wait_for(
        lambda: (
            researcher.get(f"/api/v1/datasets/{dataset_id}/").json()["status"] in ("ready", "failed")
            and researcher.get(f"/api/v1/datasets/{dataset_id}/").json()
        ),
        what="the dataset",
    )
    assert dataset["status"] == "ready", dataset["error"]
    manifest = researcher.get(dataset["downloads"]["manifest.json"])
    assert manifest.status_code == 200

    answer = researcher.post(
        "/api/v1/training-jobs/",
        {
            "kind": "finetune_quality_safety",
            "datasets": [dataset_id],
            "hyperparameters": {"steps": 60, "learning_rate": 0.003, "checkpoint_every": 20},
        },
        format="json",
    )
    assert answer.status_code == 202, answer.content
    job = wait_for(lambda: job_ended(answer.json()["id"]), what="the training job")

    assert job.status == "succeeded", job.error + job.log
    assert job.step == 60
    initial, final = job.metrics["initial"], job.metrics["final"]
    assert final["validation_loss"] < initial["validation_loss"]
    assert set(final["attributes"]) == {"SENSIBLE", "SPECIFIC", "INTERESTING", "UNSAFE"}
    version = ModelVersion.objects.get(job=job)
    assert version.parent == base
    assert version.path.joinpath("model.safetensors").exists()
    assert version.path.joinpath("tokenizer.json").exists()
    listed = {m["name"]: m for m in researcher.get("/api/v1/models/").json()["results"]}
    lineage = listed[version.name]["lineage"]
    assert lineage["datasets"] == [dataset_id]
    assert lineage["campaigns"] == sorted([ssi.pk, safety.pk])
    assert lineage["ancestors"] == [base.name]
    assert len(researcher.get(f"/api/v1/training-jobs/{job.pk}/").json()["history"]) == 60


def _kill_the_job_process(job: TrainingJob, worker: subprocess.Popen) -> int:
    pid = int(job.worker.rpartition(":")[2])
    assert pid != worker.pid, "the job must run in the worker's child process"
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_job_whose_worker_process_is_killed_resumes_from_its_checkpoint(
    training_worker: subprocess.Popen,
) -> None:
    tiny_model()
    job = pretrain_job(steps=150, checkpoint_every=10)
    running = wait_for(
        lambda: (j := TrainingJob.objects.get(pk=job.pk)).checkpoint_step >= 20 and j, what="two checkpoints"
    )

    killed = _kill_the_job_process(running, training_worker)
    job = wait_for(lambda: job_ended(job.pk), what="the job to end")

    assert job.status == "succeeded", job.error + job.log
    assert job.attempts == 2
    assert f":{killed} was lost at step" in job.log
    # It resumed from the last checkpoint before the kill, not from the start.
    resumed = int(job.log.split("resuming from the checkpoint at step ")[1].split()[0])
    assert resumed >= running.checkpoint_step
    assert [step for step, _ in job.history] == list(range(1, 151))
    assert ModelVersion.objects.filter(job=job).exists()


def test_a_job_out_of_attempts_fails_with_the_cause_and_never_stays_running(
    training_worker: subprocess.Popen, settings: Any
) -> None:
    tiny_model()
    job = pretrain_job(steps=2000, checkpoint_every=20)
    running = wait_for(
        lambda: (j := TrainingJob.objects.get(pk=job.pk)).checkpoint_step >= 20 and j, what="a checkpoint"
    )
    # This run already used every attempt the worker allows.
    TrainingJob.objects.filter(pk=job.pk).update(attempts=settings.TRAINING_MAX_ATTEMPTS)

    _kill_the_job_process(running, training_worker)
    job = wait_for(lambda: job_ended(job.pk), what="the job to end")

    assert job.status == "failed"
    assert "died" in job.error
    assert "giving up" in job.error
    assert not ModelVersion.objects.filter(job=job).exists()


def test_a_running_job_is_cancelled_at_its_next_report(training_worker: subprocess.Popen, users: Any) -> None:
    tiny_model()
    job = pretrain_job(steps=5000, checkpoint_every=1000)
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).step > 0, what="the job to start")

    requests.training_cancel(job=job, by=users["researcher"])
    job = wait_for(lambda: job_ended(job.pk), timeout=60, what="the job to stop")

    assert job.status == "cancelled"
    assert 0 < job.step < 5000
    assert "cancelled at step" in job.log
