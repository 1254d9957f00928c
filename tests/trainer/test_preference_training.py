"""A ``finetune_preference`` job (issue 17, part 3): DPO on a preference dataset's pairs, from a
tiny base model, through the real request, the training run and the model version it makes, whose
pages show the DPO figures before and after."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from groundwork.roles import Role
from tests.trainer.helpers import tiny_model
from tests.trainer.test_preference_data import export, rating_campaigns
from trainer import preference_training
from trainer.models import TrainingJob
from trainer.services import requests, training_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Path) -> None:
    settings.ARTIFACTS_DIR = tmp_path


def test_the_dpo_loss_is_the_papers() -> None:
    chosen, rejected = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    ref_chosen, ref_rejected = torch.tensor([-3.5, -4.0]), torch.tensor([-3.5, -4.0])

    loss, margins = preference_training.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)

    # β[(log πθ(c) − log πref(c)) − (log πθ(r) − log πref(r))]: 0.5·(0.5 + 0.5), 0.5·(−1 − 2).
    assert margins.tolist() == pytest.approx([0.5, -1.5])
    expected = -(math.log(1 / (1 + math.exp(-0.5))) + math.log(1 / (1 + math.exp(1.5)))) / 2
    assert float(loss) == pytest.approx(expected)


def test_a_dpo_job_raises_the_margin_of_chosen_over_rejected_on_its_pairs(
    client: Client, api_client: APIClient, users: dict[Role, Any]
) -> None:
    base = tiny_model()
    dataset = export(*rating_campaigns())
    job = requests.training_request(
        kind="finetune_preference",
        datasets=[dataset],
        hyperparameters={"steps": 20, "learning_rate": 5e-3, "batch_size": 3, "warmup_steps": 0},
        enqueue=False,
    )

    job = training_jobs.training_run(job_id=job.pk)

    assert job.status == TrainingJob.Status.SUCCEEDED, job.error + job.log
    before, after = job.metrics["initial"]["preference"]["train"], job.metrics["final"]["preference"]["train"]
    assert before["pairs"] == after["pairs"] == 3
    # The base model is the reference: before training every implicit reward margin is 0.
    assert before["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert after["logp_margin"] > before["logp_margin"] + 1.0
    assert after["reward_accuracy"] == 1.0
    assert after["dpo_loss"] < before["dpo_loss"]
    version = job.model_version
    assert version.parent == base
    assert version.name == f"gw-{job.pk}-ft-preference"
    assert version.tokenizer_sha256 == base.tokenizer_sha256
    assert job.history[-1][0] == 20

    # The job page and the model version page show the figures, initial against final, per split.
    client.force_login(users[Role.ADMIN])
    for page_url in (
        reverse("admin:trainer_trainingjob_change", args=[job.pk]),
        reverse("admin:trainer_modelversion_change", args=[version.pk]),
    ):
        page = client.get(page_url).content.decode()
        shown = dict(preference_rows(page))
        assert shown["DPO loss"] == [
            "training",
            "3",
            f"{before['dpo_loss']:.3f}",
            f"{after['dpo_loss']:.3f}",
            f"{after['dpo_loss'] - before['dpo_loss']:+.3f}",
        ]
        assert shown["DPO loss"][2] == "0.693"  # log 2: the base model is its own reference
        assert shown["reward accuracy"] == [
            "training",
            "3",
            f"{100 * before['reward_accuracy']:.1f} %",
            "100.0 %",
            f"{100 * (1 - before['reward_accuracy']):+.1f} pp",
        ]
        assert shown["reward margin"][2:4] == ["0.000", f"{after['reward_margin']:.3f}"]
        assert shown["log-likelihood margin"][2:4] == [
            f"{before['logp_margin']:.3f}",
            f"{after['logp_margin']:.3f}",
        ]
        # validation_percent 0: no validation pairs, said so rather than a row of dashes.
        assert "no validation pairs in the job's datasets" in page
    # The API gives the same figures, as the job's metrics.
    api_client.force_authenticate(users[Role.RESEARCHER])
    metrics = api_client.get(f"/api/v1/training-jobs/{job.pk}/").json()["metrics"]
    assert metrics["final"]["preference"]["train"]["reward_accuracy"] == 1.0
    assert metrics["initial"]["preference"]["validation"]["pairs"] == 0


def preference_rows(page: str) -> list[tuple[str, list[str]]]:
    """The DPO figures table of a page: (figure, [pairs, n, initial, final, change]) per row."""
    table = re.search(r'<table class="trainer-metrics preference">(.*?)</table>', page, re.S)
    assert table is not None, "no DPO figures on the page"
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S):
        cells = [
            re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        if cells:
            rows.append((cells[0], cells[1:]))
    return rows


def test_a_preference_job_takes_preference_datasets_only() -> None:
    tiny_model()
    dataset = export(*rating_campaigns())

    with pytest.raises(requests.TrainerError, match="finetune_quality_safety job trains on"):
        requests.training_request(kind="finetune_quality_safety", datasets=[dataset], enqueue=False)
    with pytest.raises(requests.TrainerError, match="dpo_beta"):
        requests.training_request(
            kind="finetune_preference", datasets=[dataset], hyperparameters={"dpo_beta": 0}, enqueue=False
        )
    with pytest.raises(requests.TrainerError, match="DPO\\) job trains in one process"):
        requests.training_request(
            kind="finetune_preference",
            datasets=[dataset],
            hyperparameters={"world_size": 2, "batch_size": 2},
            enqueue=False,
        )
