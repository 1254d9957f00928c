"""Model presets (issue 16, sizes): chosen in the Retrain form and the API as
``hyperparameters.preset``, refused clearly when unknown or for a fine-tune, trained at their
sizes, and a job's parameters, estimated memory and tokens/s shown on its page and in the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from groundwork.roles import Role
from tests.factories import dialog_with_turns
from tests.trainer.helpers import TOPICS
from tests.trainer.test_admin import job_with_history, model_version, ready_dataset, url
from trainer import selectors, sizing
from trainer.hyperparameters import MODEL_PRESETS
from trainer.models import DatasetVersion, TrainingJob
from trainer.services import dataset_builds, requests, training_jobs

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


def post_job(client: APIClient, dataset: DatasetVersion, hyperparameters: dict[str, Any], **more: Any) -> Any:
    body = {"kind": "pretrain", "datasets": [dataset.pk], "hyperparameters": hyperparameters, **more}
    return client.post(JOBS, body, format="json")


# --- the API --------------------------------------------------------------------------------


def test_a_job_queued_with_preset_small_gets_its_sizes(researcher: APIClient, artifacts: Path) -> None:
    dataset = ready_dataset(artifacts)

    response = post_job(researcher, dataset, {"preset": "small", "steps": 10})

    assert response.status_code == 202, response.content
    job = TrainingJob.objects.get()
    assert job.hyperparameters["preset"] == "small"
    assert (
        job.hyperparameters["model"]
        == MODEL_PRESETS["small"]
        == {
            "d_model": 512,
            "n_layer": 10,
            "n_head": 8,
            "d_ff": 1408,
        }
    )
    size = response.json()["size"]
    config = {**MODEL_PRESETS["small"], "vocab_size": 8192}  # the dataset's vocabulary (the default)
    assert size["preset"] == "small"
    assert size["parameters"] == sizing.parameter_count(config) == 36_317_952
    assert size["parameters_exact"] is False
    assert size["flops_per_token"] == sizing.flops_per_token(config, 256)
    assert (size["batch_size"], size["max_length"], size["precision"]) == (16, 256, "fp32")
    assert size["memory"]["total"] == sizing.training_memory_bytes(config, batch_size=16, seq_len=256)
    assert researcher.get(f"{JOBS}{job.pk}/").json()["size"] == size


def test_explicit_sizes_replace_the_presets_one_by_one(researcher: APIClient, artifacts: Path) -> None:
    dataset = ready_dataset(artifacts)

    response = post_job(researcher, dataset, {"preset": "base", "model": {"n_layer": 2}})

    assert response.status_code == 202, response.content
    assert TrainingJob.objects.get().hyperparameters["model"] == {**MODEL_PRESETS["base"], "n_layer": 2}


def test_no_preset_stores_no_sizes_and_trains_the_default(researcher: APIClient, artifacts: Path) -> None:
    """Nothing changes for a researcher who picks nothing: the stored hyperparameters are today's."""
    dataset = ready_dataset(artifacts)

    response = post_job(researcher, dataset, {"steps": 10})

    assert response.status_code == 202, response.content
    stored = TrainingJob.objects.get().hyperparameters
    assert "preset" not in stored
    assert "model" not in stored
    assert response.json()["size"]["parameters"] == 5_246_336  # tiny, GroundworkConfig's defaults
    assert response.json()["size"]["preset"] is None


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"preset": "huge"}, "hyperparameter preset: unknown preset 'huge'; known: tiny, small, base"),
        ({"preset": 3}, "hyperparameter preset: unknown preset '3'; known: tiny, small, base"),
        ({"preset": ["small"]}, "hyperparameter preset: unknown preset"),
        (
            {"preset": "small", "model": {"n_head": 7}},
            "hyperparameter model.d_model: must be a multiple of n_head, got 512 and 7",
        ),
    ],
)
def test_an_unknown_preset_is_a_400_naming_the_field(
    researcher: APIClient, artifacts: Path, hyperparameters: dict[str, Any], message: str
) -> None:
    dataset = ready_dataset(artifacts)

    response = post_job(researcher, dataset, hyperparameters)

    assert response.status_code == 400, response.content
    [error] = response.json()["hyperparameters"]
    assert message in error
    assert not TrainingJob.objects.exists()


def test_a_fine_tune_with_a_preset_is_refused(researcher: APIClient, artifacts: Path) -> None:
    dataset = ready_dataset(artifacts, kind=DatasetVersion.Kind.QUALITY_SAFETY)
    model_version("gw-1", serving=True)

    response = post_job(researcher, dataset, {"preset": "small"}, kind="finetune_quality_safety")

    assert response.status_code == 400, response.content
    [error] = response.json()["hyperparameters"]
    assert "model sizes (hyperparameters.preset and hyperparameters.model) are for pretrain jobs" in error


def test_a_fine_tunes_size_is_its_base_models(researcher: APIClient, artifacts: Path) -> None:
    """Counted on the base: its measured parameters, its config's sizes for FLOPs and memory."""
    config = {**MODEL_PRESETS["tiny"], "vocab_size": 400}
    base = model_version("gw-1", serving=True, config=config, parameters=1_234_567)
    dataset = ready_dataset(artifacts, kind=DatasetVersion.Kind.QUALITY_SAFETY)

    response = post_job(researcher, dataset, {"batch_size": 4, "bf16": True}, kind="finetune_quality_safety")

    assert response.status_code == 202, response.content
    size = response.json()["size"]
    assert (size["parameters"], size["parameters_exact"], size["preset"]) == (1_234_567, True, None)
    assert (size["precision"], size["precision_decided"]) == ("bf16", False)
    assert size["memory"]["total"] == sizing.training_memory_bytes(
        config, batch_size=4, seq_len=256, precision="bf16", parameters=base.parameters
    )


# --- the Retrain form and the job page ------------------------------------------------------


def test_the_retrain_form_offers_the_presets_and_queues_one(client: Any, users: Any, artifacts: Path) -> None:
    dataset = ready_dataset(artifacts)
    client.force_login(users[Role.RESEARCHER])
    form = client.get(url("trainingjob_add")).content.decode()
    assert 'name="preset"' in form
    assert "small: 36.3M parameters, d_model 512, 10 layers, 8 heads, d_ff 1408" in form
    assert "base: 119.6M parameters" in form

    response = client.post(
        url("trainingjob_add"),
        {
            "kind": "pretrain",
            "datasets": [dataset.pk],
            "preset": "small",
            "steps": 30,
            "learning_rate": 0.0005,
            "batch_size": 8,
            "checkpoint_every": 10,
        },
    )

    job = TrainingJob.objects.get()
    assert response["Location"] == url("trainingjob_change", job.pk)
    assert (job.hyperparameters["preset"], job.hyperparameters["model"]) == ("small", MODEL_PRESETS["small"])


def test_the_retrain_form_refuses_an_unknown_preset_and_a_fine_tune_with_one(
    client: Any, users: Any, artifacts: Path
) -> None:
    dataset = ready_dataset(artifacts)
    model_version("gw-1", serving=True)
    client.force_login(users[Role.RESEARCHER])
    fields = {
        "datasets": [dataset.pk],
        "steps": 30,
        "learning_rate": 0.001,
        "batch_size": 8,
        "checkpoint_every": 10,
    }

    unknown = client.post(url("trainingjob_add"), {**fields, "kind": "pretrain", "preset": "huge"})
    finetune = client.post(
        url("trainingjob_add"), {**fields, "kind": "finetune_quality_safety", "preset": "small"}
    )

    assert "Select a valid choice. huge is not one of the available choices." in unknown.content.decode()
    assert "are for pretrain jobs; a fine-tune keeps its base model&#x27;s" in finetune.content.decode()
    assert not TrainingJob.objects.exists()


def test_the_job_page_shows_parameters_memory_and_tokens_per_second(client: Any, users: Any) -> None:
    job = job_with_history(
        points=10,
        hyperparameters={
            "preset": "small",
            "model": MODEL_PRESETS["small"],
            "batch_size": 8,
            "max_length": 128,
        },
        average_tokens_per_second=987.6,
    )
    client.force_login(users[Role.ADMIN])

    page = client.get(url("trainingjob_change", job.pk)).content.decode()
    fragment = client.get(url("trainingjob_progress", job.pk)).content.decode()

    config = {**MODEL_PRESETS["small"], "vocab_size": 8192}
    memory = sizing.training_memory_bytes(config, batch_size=8, seq_len=128)
    for shown in (page, fragment):
        assert "Model size" in shown
        assert "<dt>preset</dt><dd>small</dd>" in shown
        assert "36,317,952 (36.3M)" in shown
        assert f"{sizing.human_bytes(memory)} for a step of 8 × 128 tokens in fp32" in shown
        assert "1234.5 latest interval · 987.6 average over the run" in shown
        flops = 987.6 * sizing.flops_per_token(config, 128) / 1e9
        assert f"{flops:,.2f} GFLOP/s of model FLOPs" in shown


# --- trained at its sizes -------------------------------------------------------------------


def test_a_pretrain_job_with_a_preset_trains_a_model_of_its_sizes(artifacts: Path) -> None:
    """The worker's side: the small preset (one layer fewer would do, but the preset itself is
    what is checked), one step of 2 × 16 tokens in the foreground. The version's measured
    parameters are what the job page said before it ran."""
    for i, topic in enumerate(TOPICS):
        dialog_with_turns(
            [f"What do you think about {topic}?", f"I like {topic} a lot, especially in the morning."],
            external_id=f"pretrain-{i}",
            purpose="pretrain",
        )
    dataset = requests.dataset_request(kind="pretrain", vocab_size=400, enqueue=False)
    dataset = dataset_builds.dataset_build(dataset_id=dataset.pk)
    job = requests.training_request(
        kind="pretrain",
        datasets=[dataset],
        hyperparameters={"preset": "small", "steps": 1, "batch_size": 2, "max_length": 16, "bf16": False},
        enqueue=False,
    )
    estimate = selectors.job_size(job)

    job = training_jobs.training_run(job_id=job.pk)

    assert job.status == TrainingJob.Status.SUCCEEDED, job.error
    version = job.model_version
    assert {name: version.config[name] for name in MODEL_PRESETS["small"]} == MODEL_PRESETS["small"]
    assert version.parameters == sizing.parameter_count(version.config)
    assert estimate is not None
    # Estimated from the requested vocabulary (400) before the tokenizer existed: within its rows.
    assert abs(estimate["parameters"] - version.parameters) <= abs(400 - version.config["vocab_size"]) * 512
    after = selectors.job_size(job)
    assert after is not None
    assert (after["parameters"], after["parameters_exact"]) == (version.parameters, True)
