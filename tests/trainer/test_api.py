"""``/api/v1/datasets/`` and ``/api/v1/training-jobs/`` refuse what no job could do: numbers out
of bounds, NaN and infinity, lists of ids without end; serve a dataset's files at the documented
URL; ``/api/v1/models/`` lists model versions with their lineage in a fixed number of queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from groundwork.roles import Role
from tests.annotation.helpers import ssi_campaign
from tests.trainer.test_admin import ready_dataset
from trainer.models import DatasetVersion, ModelVersion, TrainingJob

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/training-jobs/"


@pytest.fixture
def artifacts(settings: Any, tmp_path: Path) -> Path:
    settings.ARTIFACTS_DIR = tmp_path
    return tmp_path


@pytest.fixture
def researcher(api_client: APIClient, users: dict[Role, Any]) -> APIClient:
    api_client.force_authenticate(users[Role.RESEARCHER])
    return api_client


# --- a dataset's files ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
def test_a_dataset_file_is_served_at_the_documented_url(
    researcher: APIClient, artifacts: Path, suffix: str
) -> None:
    """``files/manifest.json`` was read as the file "manifest" in the format "json": a 500."""
    dataset = ready_dataset(artifacts)

    response = researcher.get(f"/api/v1/datasets/{dataset.pk}/files/manifest.json{suffix}")

    assert response.status_code == 200
    assert json.loads(b"".join(response.streaming_content))["kind"] == "pretrain"


def test_the_download_links_are_the_documented_urls(researcher: APIClient, artifacts: Path) -> None:
    dataset = ready_dataset(artifacts)

    downloads = researcher.get(f"/api/v1/datasets/{dataset.pk}/").json()["downloads"]

    assert downloads["train.jsonl"] == f"http://testserver/api/v1/datasets/{dataset.pk}/files/train.jsonl"
    assert researcher.get(downloads["train.jsonl"]).status_code == 200


def test_an_unknown_file_of_a_dataset_is_a_json_404(researcher: APIClient, artifacts: Path) -> None:
    dataset = ready_dataset(artifacts)

    response = researcher.get(f"/api/v1/datasets/{dataset.pk}/files/secrets.json")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


# --- bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        (
            '{"steps": 1000000000000}',
            "hyperparameter steps: must be between 1 and 1000000, got 1000000000000",
        ),
        ('{"steps": 1.5}', "hyperparameter steps: expected int, got '1.5'"),
        ('{"steps": true}', "hyperparameter steps: expected int"),
        ('{"learning_rate": "NaN"}', "hyperparameter learning_rate: must be a finite number"),
        ('{"learning_rate": 1e400}', "hyperparameter learning_rate: must be a finite number"),
        ('{"learning_rate": 5}', "hyperparameter learning_rate: must be between 1e-08 and 1.0, got 5.0"),
        ('{"batch_size": 100000}', "hyperparameter batch_size: must be between 1 and 1024"),
        ('{"batch_size": 1024, "max_length": 4096}', "batch_size × max_length must be at most 262144"),
        ('{"max_length": 4}', "hyperparameter max_length: must be between 8 and 4096"),
        ('{"warmup_steps": -5}', "hyperparameter warmup_steps: must be between 0 and 1000000"),
        ('{"weight_decay": "inf"}', "hyperparameter weight_decay: must be a finite number"),
        ('{"seed": 18446744073709551616}', "hyperparameter seed: must be between 0 and 4294967295"),
        ('{"report_every": 0.0001}', "hyperparameter report_every: must be between 0.1 and 3600.0"),
        ('{"qs_mix_share": 1.5}', "hyperparameter qs_mix_share: must be between 0.0 and 1.0, got 1.5"),
        ('{"model": {"d_model": 1000000000}}', "hyperparameter model.d_model: must be between 8 and 4096"),
        ('{"model": {"n_layer": 1000}}', "hyperparameter model.n_layer: must be between 1 and 64"),
        (
            '{"model": {"d_model": 100, "n_head": 3}}',
            "hyperparameter model.d_model: must be a multiple of n_head",
        ),
    ],
)
def test_a_training_job_out_of_bounds_is_a_400_naming_the_field(
    researcher: APIClient, artifacts: Path, hyperparameters: str, message: str
) -> None:
    dataset = ready_dataset(artifacts)
    body = f'{{"kind": "pretrain", "datasets": [{dataset.pk}], "hyperparameters": {hyperparameters}}}'

    response = researcher.post(JOBS, body, content_type="application/json")

    assert response.status_code == 400, response.content
    [error] = response.json()["hyperparameters"]
    assert message in error
    assert not TrainingJob.objects.exists()


def test_a_training_job_at_the_bounds_is_queued(researcher: APIClient, artifacts: Path) -> None:
    dataset = ready_dataset(artifacts)
    hyperparameters = {
        "steps": 1_000_000,
        "learning_rate": 1.0,
        "batch_size": 64,
        "max_length": 4096,
        "seed": 2**32 - 1,
    }

    response = researcher.post(
        JOBS,
        {
            "kind": "pretrain",
            "datasets": [dataset.pk],
            "hyperparameters": {**hyperparameters, "model": {"d_model": 4096, "n_head": 64}},
        },
        format="json",
    )

    assert response.status_code == 202, response.content
    stored = TrainingJob.objects.get().hyperparameters
    assert {name: stored[name] for name in hyperparameters} == hyperparameters
    assert stored["model"] == {"d_model": 4096, "n_head": 64}


@pytest.mark.parametrize(
    ("url", "field", "body"),
    [
        (JOBS, "datasets", {"kind": "pretrain", "datasets": list(range(1, 102))}),
        ("/api/v1/datasets/", "campaigns", {"kind": "quality_safety", "campaigns": list(range(1, 102))}),
    ],
)
def test_a_list_of_ids_is_bounded(researcher: APIClient, url: str, field: str, body: dict[str, Any]) -> None:
    """Each id was looked up with a query of its own, however many were sent."""
    response = researcher.post(url, body, format="json")

    assert response.status_code == 400
    assert response.json()[field] == ["Ensure this field has no more than 100 elements."]


@pytest.mark.parametrize(("url", "field"), [(JOBS, "datasets"), ("/api/v1/datasets/", "campaigns")])
def test_an_id_beyond_64_bits_in_a_list_is_a_400_naming_the_field(
    researcher: APIClient, url: str, field: str
) -> None:
    response = researcher.post(url, {"kind": "pretrain", field: [2**64]}, format="json")

    assert response.status_code == 400
    assert "less than or equal to 9223372036854775807" in str(response.json()[field])


def test_the_datasets_of_a_job_are_looked_up_in_one_query(
    researcher: APIClient, artifacts: Path, django_assert_max_num_queries: Any
) -> None:
    datasets = [ready_dataset(artifacts) for _ in range(3)]
    missing = max(d.pk for d in datasets) + 1

    with django_assert_max_num_queries(3):  # session, the datasets, nothing per id
        response = researcher.post(
            JOBS, {"kind": "pretrain", "datasets": [d.pk for d in datasets] + [missing]}, format="json"
        )

    assert response.status_code == 400
    assert response.json()["datasets"] == [f"no dataset version with the id {missing}"]
    assert DatasetVersion.objects.count() == 3


@pytest.mark.parametrize(("url", "field"), [(JOBS, "base_model"), ("/api/v1/datasets/", "tokenizer_source")])
def test_a_model_name_with_a_nul_is_a_400_naming_the_field(
    researcher: APIClient, artifacts: Path, url: str, field: str
) -> None:
    """PostgreSQL cannot compare a NUL: the lookup by name was a 500."""
    dataset = ready_dataset(artifacts)

    response = researcher.post(
        url, {"kind": "pretrain", "datasets": [dataset.pk], field: "gw\u0000"}, format="json"
    )

    assert response.status_code == 400
    assert response.json()[field] == ["Invalid value."]


# --- model versions -------------------------------------------------------------------------


def model_chains(*, versions: int, length: int) -> list[ModelVersion]:
    """``versions`` model versions in chains of ``length``: each one's parent is the one before,
    each made by a job that trained on a dataset of a campaign."""
    campaign = ssi_campaign(items=1, name=f"chains of {length}")
    made = []
    for index in range(versions):
        dataset = DatasetVersion.objects.create(kind="quality_safety", status="ready")
        dataset.campaigns.set([campaign])
        parent = made[-1] if index % length else None
        job = TrainingJob.objects.create(
            kind="finetune_quality_safety", status="succeeded", base_model=parent
        )
        job.datasets.set([dataset])
        made.append(
            ModelVersion.objects.create(
                name=f"gw-{index}", directory=f"models/{index}", parent=parent, job=job
            )
        )
    return made


# The user's permissions (2), the count, the page, the jobs' datasets and their campaigns, and the
# ancestors of every version on the page.
MODEL_LIST_QUERIES = 7


@pytest.mark.parametrize("length", [2, 8])
def test_listing_models_costs_the_same_queries_however_deep_their_lineage(
    researcher: APIClient, length: int, django_assert_num_queries: Any
) -> None:
    """The lineage was walked one query per ancestor for every listed model."""
    made = model_chains(versions=8, length=length)

    with django_assert_num_queries(MODEL_LIST_QUERIES):
        response = researcher.get("/api/v1/models/")

    assert response.status_code == 200
    lineage = {row["name"]: row["lineage"]["ancestors"] for row in response.json()["results"]}
    last = made[length - 1]
    assert lineage[last.name] == [f"gw-{index}" for index in reversed(range(length - 1))]
    assert lineage["gw-0"] == []
