"""Labels you can trust (issue 14): a groundedness fine-tune keeps the discriminators (it mixes in
a share of its base model's quality-safety data and evaluates every discriminator before and
after, shown on the job page), and a pre-training job's first weights follow from its seed.

Jobs run in the foreground (``training_run``) on tiny models and datasets, as the worker runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from django.urls import reverse

from annotation.services import assignments, rewrites
from groundwork.roles import Role
from tests.annotation.helpers import JAGUAR_URL, rewrite_campaign, rewrite_corpus
from tests.factories import UserFactory
from tests.trainer.helpers import TINY, labelled_campaigns, tiny_model
from trainer import charts, records
from trainer.hyperparameters import Hyperparameters
from trainer.modeling import GroundworkForCausalLM
from trainer.models import DatasetVersion, ModelVersion, TrainingJob
from trainer.services import dataset_builds, requests, training_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Path) -> None:
    settings.ARTIFACTS_DIR = tmp_path


def export(kind: str, campaigns: list[Any], **kwargs: Any) -> DatasetVersion:
    dataset = requests.dataset_request(kind=kind, campaigns=campaigns, enqueue=False, **kwargs)
    dataset = dataset_builds.dataset_build(dataset_id=dataset.pk)
    assert dataset.status == DatasetVersion.Status.READY, dataset.error
    return dataset


def run(kind: str, datasets: list[DatasetVersion], base: ModelVersion | None, **hp: Any) -> TrainingJob:
    job = requests.training_request(
        kind=kind, datasets=datasets, base_model=base, hyperparameters=hp, enqueue=False
    )
    job = training_jobs.training_run(job_id=job.pk)
    assert job.status == TrainingJob.Status.SUCCEEDED, job.error + job.log
    return job


def rewritten_campaign() -> Any:
    """A rewrite campaign whose one rewrite researched twice: three research examples."""
    rewrite_corpus()
    campaign = rewrite_campaign()
    worker = UserFactory(role=Role.CROWDWORKER)
    lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="jaguar")
    rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="largest cat Americas")
    rewrites.rewrite_submit(
        assignment_id=lease.pk,
        worker=worker,
        claims_external=True,
        common_knowledge=False,
        rewrite=f"The jaguar is the largest cat in the Americas [Jaguar]({JAGUAR_URL}).",
    )
    return campaign


def rows(dataset: DatasetVersion, split: str) -> list[dict[str, Any]]:
    return list(records.read_rows(dataset.path, split))


@pytest.fixture
def lineage() -> dict[str, Any]:
    """pretrain → FT quality-safety (serving) and a groundedness dataset in their tokenizer."""
    pretrained = tiny_model()
    rewrites_campaign = rewritten_campaign()  # before the labelled dialogs, so it holds only its own
    ssi, safety = labelled_campaigns(items=12, unsafe=(0, 3))
    labels = export("quality_safety", [ssi, safety], validation_percent=50)
    quality_safety = run("finetune_quality_safety", [labels], pretrained, steps=3).model_version
    requests.model_serve(model=quality_safety)
    grounding = export("groundedness", [rewrites_campaign], validation_percent=0)
    return {
        "pretrained": pretrained,
        "labels": labels,
        "quality_safety": quality_safety,
        "grounding": grounding,
    }


def test_a_groundedness_fine_tune_mixes_in_its_share_of_quality_safety_data_and_rates_the_discriminators(
    lineage: dict[str, Any], client: Any, users: Any
) -> None:
    labels, grounding = lineage["labels"], lineage["grounding"]
    available = [(r["input_ids"], r["loss_mask"]) for r in rows(labels, "train")]
    held_out = [r for r in rows(labels, "validation") if r["kind"] == "discriminative"]
    attributes = {r["attribute"] for r in held_out}
    assert {"SENSIBLE", "UNSAFE"} <= attributes
    own = len(rows(grounding, "train"))

    job = run("finetune_groundedness", [grounding], lineage["quality_safety"], steps=2, qs_mix_share=0.5)

    mix = job.metrics["mix"]
    assert mix == {
        "share": 0.5,
        "source": lineage["quality_safety"].name,
        "datasets": [labels.pk],
        "left_out": [],
        "available": len(available),
        "mixed": int(len(available) * 0.5 + 0.5),  # rounded half up
        "own_examples": own,
        "evaluated": len(held_out),
    }
    # What it trains on: its own examples, then that share of the quality-safety ones.
    hp = Hyperparameters.from_dict({"qs_mix_share": 0.5})
    trained_on, _, rated, _ = training_jobs._training_data(job, hp)
    assert len(trained_on) == own + mix["mixed"]
    assert all(pair in available for pair in trained_on[own:])
    assert len(rated) == len(held_out)
    # Every discriminator, before (the base model) and after (the new weights), on the same examples.
    for stage in ("initial", "final"):
        measured = job.metrics[stage]["attributes"]
        assert set(measured) == attributes
        for name in attributes:
            assert measured[name]["n"] == sum(1 for r in held_out if r["attribute"] == name)
            assert 0 <= measured[name]["accuracy"] <= 1
            assert "auc" in measured[name]
        assert any(measured[name]["auc"] is not None for name in attributes)  # two classes held out
    assert ModelVersion.objects.get(job=job).metrics["mix"] == mix
    assert f"mixing {mix['mixed']} of {mix['available']} quality-safety training examples" in job.log

    client.force_login(users[Role.RESEARCHER])
    page = client.get(reverse("admin:trainer_trainingjob_change", args=[job.pk])).content.decode()

    assert "Quality-safety data mixed in" in page
    assert f"Mixed <strong>{mix['mixed']}</strong> of {mix['available']} quality-safety" in page
    assert f"#{labels.pk}" in page
    assert "accuracy change" in page
    assert "AUC change" in page
    before, after = job.metrics["initial"]["attributes"], job.metrics["final"]["attributes"]
    for name in attributes:
        accuracy_change = charts.change(before[name]["accuracy"], after[name]["accuracy"])
        auc_change = charts.change(before[name]["auc"], after[name]["auc"]) or "—"
        cells = (
            f"<td>{name}</td>",
            f'<td class="number">{before[name]["accuracy"]:.3f}</td>',
            f'<td class="number">{after[name]["accuracy"]:.3f}</td>',
            f'<td class="number">{accuracy_change}</td>',
            f'<td class="number">{auc_change}</td>',
        )
        row = page[page.index(f"<td>{name}</td>") :].split("</tr>")[0]
        assert all(cell in row for cell in cells), row


def test_a_share_of_0_mixes_nothing_but_still_evaluates_the_discriminators(lineage: dict[str, Any]) -> None:
    own = len(rows(lineage["grounding"], "train"))

    job = run(
        "finetune_groundedness", [lineage["grounding"]], lineage["quality_safety"], steps=1, qs_mix_share=0
    )

    assert (job.metrics["mix"]["mixed"], job.metrics["mix"]["own_examples"]) == (0, own)
    assert job.metrics["mix"]["available"] > 0
    trained_on, *_ = training_jobs._training_data(job, Hyperparameters.from_dict({"qs_mix_share": 0}))
    assert len(trained_on) == own
    assert (
        set(job.metrics["initial"]["attributes"])
        == set(job.metrics["final"]["attributes"])
        >= {
            "SENSIBLE",
            "UNSAFE",
        }
    )


def test_a_groundedness_fine_tune_of_a_pretrained_model_says_it_has_no_quality_safety_data(
    lineage: dict[str, Any], client: Any, users: Any
) -> None:
    job = run("finetune_groundedness", [lineage["grounding"]], lineage["pretrained"], steps=1)

    assert job.metrics["mix"]["source"] is None
    assert (job.metrics["mix"]["available"], job.metrics["mix"]["mixed"]) == (0, 0)
    assert "no quality-safety data to mix in" in job.log
    client.force_login(users[Role.RESEARCHER])
    page = client.get(reverse("admin:trainer_trainingjob_change", args=[job.pk])).content.decode()
    assert "The base model has no quality-safety data" in page
    assert "nothing was mixed in" in page


# --- reproducible first weights ------------------------------------------------------------------


def test_pretrain_jobs_with_the_same_dataset_and_hyperparameters_give_the_same_model() -> None:
    tiny_model()
    dataset = DatasetVersion.objects.get(kind="pretrain")

    def weights(seed: int) -> tuple[dict[str, torch.Tensor], TrainingJob]:
        torch.rand(1000)  # the worker's global generator moves on between jobs
        job = run("pretrain", [dataset], None, steps=2, seed=seed, model=TINY)
        model = GroundworkForCausalLM.from_pretrained(str(job.model_version.path))
        return model.state_dict(), job

    first, first_job = weights(7)
    again, again_job = weights(7)
    other, _ = weights(8)

    assert first_job.metrics["initial"] == again_job.metrics["initial"]
    assert first_job.history == again_job.history
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
