"""The trainer admin: admins may watch, only researchers trigger (export, retrain, cancel, serve).

Rows the pages only read (jobs with a loss history, ready datasets, model versions) are made
directly here; the requests (export, retrain, cancel, serve) go through the admin's views and the
services. ``transaction.on_commit`` never fires inside a test's transaction, so nothing is queued.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.urls import reverse

from groundwork.roles import Role
from tests.annotation.helpers import ssi_campaign
from trainer.models import DatasetVersion, ModelVersion, TrainingJob

pytestmark = pytest.mark.django_db

TOKENIZER = "t" * 64
FINAL = {
    "validation_examples": 40,
    "validation_loss": 2.5,
    "attributes": {"sensible": {"n": 12, "accuracy": 0.75, "auc": 0.8125}},
}
INITIAL = {
    "validation_examples": 40,
    "validation_loss": 6.25,
    "attributes": {"sensible": {"n": 12, "accuracy": 0.5, "auc": 0.5}},
}


@pytest.fixture(autouse=True)
def artifacts(settings: Any, tmp_path: Path) -> Path:
    settings.ARTIFACTS_DIR = tmp_path
    return tmp_path


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:trainer_{name}", args=args)


def model_version(name: str, *, serving: bool = False, **kwargs: Any) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, directory=f"models/{name}", tokenizer_sha256=TOKENIZER, serving=serving, **kwargs
    )


def ready_dataset(artifacts: Path, kind: str = DatasetVersion.Kind.PRETRAIN) -> DatasetVersion:
    """A ready dataset whose files lie under ARTIFACTS_DIR, as dataset_build leaves it."""
    dataset = DatasetVersion.objects.create(kind=kind, status=DatasetVersion.Status.READY, total=3, done=3)
    directory = artifacts / "datasets" / str(dataset.pk)
    directory.mkdir(parents=True)
    manifest = {"kind": kind, "counts": {"train": {"generative": 2}, "validation": {"generative": 1}}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    (directory / "train.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')
    (directory / "validation.jsonl").write_text('{"id": "c"}\n')
    DatasetVersion.objects.filter(pk=dataset.pk).update(
        directory=f"datasets/{dataset.pk}",
        files={
            "manifest.json": {"sha256": "m" * 64, "bytes": 120},
            "train.jsonl": {"sha256": "a" * 64, "bytes": 26, "rows": 2},
            "validation.jsonl": {"sha256": "b" * 64, "bytes": 13, "rows": 1},
        },
        sha256="m" * 64,
        tokenizer_sha256=TOKENIZER,
        counts={
            "splits": {"train": {"generative": 2}, "validation": {"generative": 1}},
            "label_balance": {"sensible": {"0": 4, "1": 7}},
            "skipped": {"sources_without_examples": 0},
        },
    )
    dataset.refresh_from_db()
    return dataset


def job_with_history(
    status: str = TrainingJob.Status.RUNNING, points: int = 1000, **kwargs: Any
) -> TrainingJob:
    return TrainingJob.objects.create(
        kind=TrainingJob.Kind.PRETRAIN,
        status=status,
        step=points,
        total_steps=points * 2,
        loss=1.75,
        tokens_per_second=1234.5,
        attempts=1,
        worker="host:42",
        history=[[step, 8.0 - 6.0 * step / points] for step in range(1, points + 1)],
        log="2025-01-01 00:00:00 attempt 1 on host:42\n",
        **kwargs,
    )


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- who may open what ----------------------------------------------------------------------


def test_a_researcher_opens_the_export_and_retrain_forms(client, users) -> None:
    client.force_login(users[Role.RESEARCHER])

    export = client.get(url("datasetversion_add"))
    retrain = client.get(url("trainingjob_add"))

    assert export.status_code == 200
    assert 'value="Export dataset"' in export.content.decode()
    assert 'name="validation_percent" value="10"' in export.content.decode()
    assert retrain.status_code == 200
    page = retrain.content.decode()
    assert 'name="steps" value="200"' in page
    assert 'name="checkpoint_every" value="50"' in page
    jobs = client.get(url("trainingjob_changelist")).content.decode()
    assert f'href="{url("trainingjob_add")}" class="addlink">Retrain</a>' in jobs


def test_an_admin_watches_but_gets_403_for_retrain_cancel_and_serve(client, users, artifacts) -> None:
    job = job_with_history()
    version = model_version("gw-1")
    dataset = ready_dataset(artifacts)
    client.force_login(users[Role.ADMIN])

    jobs = client.get(url("trainingjob_changelist"))
    assert jobs.status_code == 200
    assert url("trainingjob_add") not in jobs.content.decode()
    page = client.get(url("trainingjob_change", job.pk))
    assert page.status_code == 200
    assert "<polyline" in page.content.decode()
    assert url("trainingjob_cancel", job.pk) not in page.content.decode()
    assert client.get(url("trainingjob_progress", job.pk)).status_code == 200
    assert client.get(url("modelversion_change", version.pk)).status_code == 200
    assert client.get(url("datasetversion_change", dataset.pk)).status_code == 200

    assert client.get(url("trainingjob_add")).status_code == 403
    form = {"kind": "pretrain", "datasets": [dataset.pk], "steps": 10, "learning_rate": 0.001}
    assert (
        client.post(url("trainingjob_add"), {**form, "batch_size": 4, "checkpoint_every": 5}).status_code
        == 403
    )
    assert client.post(url("trainingjob_cancel", job.pk)).status_code == 403
    assert client.post(url("modelversion_serve", version.pk)).status_code == 403
    assert not TrainingJob.objects.exclude(pk=job.pk).exists()
    job.refresh_from_db()
    version.refresh_from_db()
    assert (job.status, job.cancel_requested, version.serving) == (TrainingJob.Status.RUNNING, False, False)
    # The serve action is not offered to admins either.
    assert "serve_selected" not in client.get(url("modelversion_changelist")).content.decode()


def test_admins_may_export_datasets(client, users) -> None:
    client.force_login(users[Role.ADMIN])
    assert client.get(url("datasetversion_add")).status_code == 200
    response = client.post(url("datasetversion_add"), {"kind": "pretrain", "validation_percent": 10})
    dataset = DatasetVersion.objects.get()
    assert response["Location"] == url("datasetversion_change", dataset.pk)


def test_a_crowdworker_is_sent_to_the_admin_login(client, users, artifacts) -> None:
    job = job_with_history()
    version = model_version("gw-1")
    dataset = ready_dataset(artifacts)
    client.force_login(users[Role.CROWDWORKER])
    for target in (
        url("trainingjob_changelist"),
        url("trainingjob_add"),
        url("trainingjob_change", job.pk),
        url("trainingjob_progress", job.pk),
        url("datasetversion_add"),
        url("datasetversion_progress", dataset.pk),
        url("datasetversion_download", dataset.pk, "train.jsonl"),
        url("modelversion_change", version.pk),
    ):
        response = client.get(target)
        assert response.status_code == 302, target
        assert response["Location"].startswith(reverse("admin:login")), target
    for target in (url("trainingjob_cancel", job.pk), url("modelversion_serve", version.pk)):
        assert client.post(target).status_code == 302, target
    job.refresh_from_db()
    assert not job.cancel_requested


def test_no_row_is_changed_or_deleted_through_the_generic_forms(client, users, artifacts) -> None:
    job = job_with_history()
    version = model_version("gw-1")
    dataset = ready_dataset(artifacts)
    client.force_login(users[Role.RESEARCHER])
    for name, pk in (("trainingjob", job.pk), ("modelversion", version.pk), ("datasetversion", dataset.pk)):
        assert client.get(url(f"{name}_delete", pk)).status_code == 403, name
        assert client.post(url(f"{name}_change", pk), {"name": "renamed"}).status_code == 403, name
    assert ModelVersion.objects.get().name == "gw-1"


# --- datasets -------------------------------------------------------------------------------


def test_a_researcher_exports_a_dataset(client, users) -> None:
    campaign = ssi_campaign(items=1, name="quality")
    model_version("gw-1", serving=True)
    client.force_login(users[Role.RESEARCHER])

    response = client.post(
        url("datasetversion_add"),
        {"kind": "quality_safety", "campaigns": [campaign.pk], "validation_percent": 20},
    )

    dataset = DatasetVersion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == url("datasetversion_change", dataset.pk)
    assert (dataset.kind, dataset.status, dataset.validation_percent) == ("quality_safety", "pending", 20)
    assert list(dataset.campaigns.all()) == [campaign]
    assert dataset.tokenizer_source.name == "gw-1"  # blank: the serving model's tokenizer
    assert dataset.created_by == users[Role.RESEARCHER]


def test_a_refused_export_shows_the_services_reason(client, users) -> None:
    client.force_login(users[Role.RESEARCHER])

    response = client.post(url("datasetversion_add"), {"kind": "quality_safety", "validation_percent": 10})

    assert response.status_code == 200
    # The campaign kinds as the campaign pages name them, not their internal names.
    assert (
        "choose at least one campaign of kind “Sensibleness, specificity, interestingness”, “Safety” "
        "or “Groundedness: evaluation”"
    ) in response.content.decode()
    assert not DatasetVersion.objects.exists()


def test_a_ready_dataset_shows_counts_manifest_and_downloads(client, users, artifacts) -> None:
    dataset = ready_dataset(artifacts)
    client.force_login(users[Role.ADMIN])

    page = client.get(url("datasetversion_change", dataset.pk)).content.decode()

    assert url("datasetversion_download", dataset.pk, "train.jsonl") in page
    assert url("datasetversion_download", dataset.pk, "manifest.json") in page
    assert "hx-trigger" not in page
    assert "&quot;kind&quot;: &quot;pretrain&quot;" in page  # pretty-printed manifest
    assert "sensible" in page  # label balance
    download = client.get(url("datasetversion_download", dataset.pk, "train.jsonl"))
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    assert b"".join(download.streaming_content) == b'{"id": "a"}\n{"id": "b"}\n'


def test_download_404s_for_an_unknown_file_a_missing_dataset_or_one_not_ready(
    client, users, artifacts
) -> None:
    dataset = ready_dataset(artifacts)
    pending = DatasetVersion.objects.create(kind=DatasetVersion.Kind.PRETRAIN)
    client.force_login(users[Role.RESEARCHER])

    assert client.get(url("datasetversion_download", dataset.pk, "secrets.txt")).status_code == 404
    assert client.get(url("datasetversion_download", dataset.pk, "..")).status_code == 404
    assert client.get(url("datasetversion_download", 99999, "train.jsonl")).status_code == 404
    assert client.get(url("datasetversion_download", pending.pk, "train.jsonl")).status_code == 404
    assert client.get(url("datasetversion_progress", 99999)).status_code == 404


def test_a_building_dataset_polls_its_progress_every_second(client, users) -> None:
    dataset = DatasetVersion.objects.create(
        kind=DatasetVersion.Kind.PRETRAIN, status=DatasetVersion.Status.RUNNING, done=3, total=8
    )
    client.force_login(users[Role.ADMIN])

    fragment = client.get(url("datasetversion_progress", dataset.pk)).content.decode()

    assert 'hx-trigger="every 1s"' in fragment
    assert '<progress value="3" max="8"></progress> 3 / 8' in fragment
    assert "<html" not in fragment
    DatasetVersion.objects.filter(pk=dataset.pk).update(status=DatasetVersion.Status.FAILED, error="Boom: no")
    fragment = client.get(url("datasetversion_progress", dataset.pk)).content.decode()
    assert "hx-trigger" not in fragment
    assert "Boom: no" in fragment


# --- training jobs --------------------------------------------------------------------------


def test_a_researcher_retrains(client, users, artifacts) -> None:
    dataset = ready_dataset(artifacts)
    client.force_login(users[Role.RESEARCHER])

    response = client.post(
        url("trainingjob_add"),
        {
            "kind": "pretrain",
            "datasets": [dataset.pk],
            "steps": 30,
            "learning_rate": 0.0005,
            "batch_size": 8,
            "checkpoint_every": 10,
        },
    )

    job = TrainingJob.objects.get()
    assert response["Location"] == url("trainingjob_change", job.pk)
    assert (job.status, job.total_steps, job.created_by) == ("queued", 30, users[Role.RESEARCHER])
    assert list(job.datasets.all()) == [dataset]
    hp = job.hyperparameters
    assert (hp["steps"], hp["learning_rate"], hp["batch_size"], hp["checkpoint_every"]) == (30, 0.0005, 8, 10)


def test_the_retrain_form_takes_a_seed_and_the_quality_safety_mix_share(client, users, artifacts) -> None:
    dataset = ready_dataset(artifacts)
    client.force_login(users[Role.RESEARCHER])
    form = client.get(url("trainingjob_add")).content.decode()
    assert 'name="seed"' in form
    assert 'name="qs_mix_share" value="0.2"' in form

    client.post(
        url("trainingjob_add"),
        {
            "kind": "pretrain",
            "datasets": [dataset.pk],
            "steps": 30,
            "learning_rate": 0.0005,
            "batch_size": 8,
            "checkpoint_every": 10,
            "seed": 9,
            "qs_mix_share": 0,
        },
    )

    hp = TrainingJob.objects.get().hyperparameters
    assert (hp["seed"], hp["qs_mix_share"]) == (9, 0.0)


def test_a_refused_retrain_shows_the_services_reason(client, users, artifacts) -> None:
    dataset = ready_dataset(artifacts)  # a pretrain dataset
    model_version("gw-1", serving=True)
    client.force_login(users[Role.RESEARCHER])

    response = client.post(
        url("trainingjob_add"),
        {
            "kind": "finetune_quality_safety",
            "datasets": [dataset.pk],
            "steps": 200,
            "learning_rate": 0.001,
            "batch_size": 16,
            "checkpoint_every": 50,
        },
    )

    assert response.status_code == 200
    assert "trains on quality_safety or filtered datasets" in response.content.decode()
    assert not TrainingJob.objects.exists()


def test_a_retrain_beyond_the_bounds_of_every_job_is_refused_on_the_form(client, users, artifacts) -> None:
    """The form's bounds are the jobs' (trainer.hyperparameters.BOUNDS): 2048 passed it before."""
    dataset = ready_dataset(artifacts)
    client.force_login(users[Role.RESEARCHER])

    response = client.post(
        url("trainingjob_add"),
        {
            "kind": "pretrain",
            "datasets": [dataset.pk],
            "steps": 200,
            "learning_rate": 0.001,
            "batch_size": 2048,
            "checkpoint_every": 50,
        },
    )

    assert response.status_code == 200
    assert "Ensure this value is less than or equal to 1024." in response.content.decode()
    assert not TrainingJob.objects.exists()


def test_the_job_page_draws_the_loss_curve_and_polls_while_running(client, users) -> None:
    job = job_with_history(points=1000)
    client.force_login(users[Role.RESEARCHER])

    page = client.get(url("trainingjob_change", job.pk)).content.decode()

    points = re.search(r'<polyline[^>]* points="([^"]+)"', page)
    assert points is not None
    assert 2 <= len(points.group(1).split()) <= 300
    assert ">step 1<" in page
    assert ">step 1000<" in page
    assert ">7.994<" in page  # the largest loss
    assert ">2.000<" in page  # the smallest
    assert 'hx-trigger="every 2s"' in page
    assert url("trainingjob_progress", job.pk) in page
    assert url("trainingjob_cancel", job.pk) in page
    assert "1234.5" in page
    assert "host:42" in page
    assert "attempt 1 on host:42" in page


def test_the_progress_fragment_of_a_finished_job_stops_polling(client, users) -> None:
    job = job_with_history(
        status=TrainingJob.Status.SUCCEEDED,
        points=50,
        metrics={"initial": INITIAL, "final": FINAL, "train_loss": 1.75},
    )
    version = model_version("gw-9", job=job)
    client.force_login(users[Role.ADMIN])

    fragment = client.get(url("trainingjob_progress", job.pk)).content.decode()

    assert "hx-trigger" not in fragment
    assert "hx-get" not in fragment
    assert "<html" not in fragment
    assert "<polyline" in fragment
    assert url("modelversion_change", version.pk) in fragment
    assert "6.2500" in fragment  # initial validation loss
    assert "2.5000" in fragment  # final validation loss
    assert "0.813" in fragment  # final AUC of "sensible", 0.8125
    assert "DPO figure" not in fragment  # a DPO job's table only
    assert url("trainingjob_cancel", job.pk) not in fragment


def test_a_researcher_cancels_a_queued_job(client, users) -> None:
    job = TrainingJob.objects.create(kind=TrainingJob.Kind.PRETRAIN, total_steps=10)
    client.force_login(users[Role.RESEARCHER])

    response = client.post(url("trainingjob_cancel", job.pk))

    assert response["Location"] == url("trainingjob_change", job.pk)
    job.refresh_from_db()
    assert (job.status, job.cancel_requested) == (TrainingJob.Status.CANCELLED, True)
    assert "cancelled" in messages_of(response)[0]
    # Again: the services refuse, the page says why.
    again = client.post(url("trainingjob_cancel", job.pk))
    assert "already ended" in messages_of(again)[-1]
    assert client.get(url("trainingjob_cancel", job.pk)).status_code == 405
    assert client.post(url("trainingjob_cancel", 99999)).status_code == 404


def test_cancelling_a_running_job_with_htmx_answers_the_fragment(client, users) -> None:
    job = job_with_history(points=5)
    client.force_login(users[Role.RESEARCHER])

    response = client.post(url("trainingjob_cancel", job.pk), headers={"HX-Request": "true"})

    assert response.status_code == 200
    fragment = response.content.decode()
    assert 'id="job-panel"' in fragment
    assert "Cancel requested" in fragment
    assert url("trainingjob_cancel", job.pk) not in fragment  # no second cancel button
    job.refresh_from_db()
    assert (job.status, job.cancel_requested) == (TrainingJob.Status.RUNNING, True)


def test_the_job_list_shows_progress_loss_and_the_model_version(client, users) -> None:
    job = job_with_history(status=TrainingJob.Status.SUCCEEDED, points=10)
    version = model_version("gw-7", job=job)
    client.force_login(users[Role.ADMIN])

    page = client.get(url("trainingjob_changelist")).content.decode()

    assert '<progress value="10" max="20"></progress> 10 / 20' in page
    assert "1.7500" in page
    assert f'<a href="{url("modelversion_change", version.pk)}">gw-7</a>' in page


# --- model versions -------------------------------------------------------------------------


def test_serving_switches_the_flag(client, users) -> None:
    old = model_version("gw-1", serving=True)
    new = model_version("gw-2")
    client.force_login(users[Role.RESEARCHER])

    page = client.get(url("modelversion_change", new.pk)).content.decode()
    assert url("modelversion_serve", new.pk) in page
    retrain = f"{url('trainingjob_add')}?base_model={new.pk}"
    assert retrain in page
    assert f'<option value="{new.pk}" selected>gw-2</option>' in client.get(retrain).content.decode()
    response = client.post(url("modelversion_serve", new.pk))

    assert response["Location"] == url("modelversion_change", new.pk)
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.serving, new.serving) == (False, True)
    assert client.post(url("modelversion_serve", 99999)).status_code == 404


def test_the_serve_action_takes_exactly_one_version(client, users) -> None:
    first = model_version("gw-1", serving=True)
    second = model_version("gw-2")
    client.force_login(users[Role.RESEARCHER])
    changelist = url("modelversion_changelist")

    both = client.post(changelist, {"action": "serve_selected", "_selected_action": [first.pk, second.pk]})
    assert "exactly one" in messages_of(both)[0]
    assert ModelVersion.objects.get(serving=True) == first

    client.post(changelist, {"action": "serve_selected", "_selected_action": [second.pk]})
    assert ModelVersion.objects.get(serving=True) == second


def test_the_model_page_shows_its_lineage_and_metrics(client, users, artifacts) -> None:
    campaign = ssi_campaign(items=1, name="quality round 7")
    pretrain_set = ready_dataset(artifacts)
    pretrain_job = job_with_history(status=TrainingJob.Status.SUCCEEDED, points=5)
    pretrain_job.datasets.set([pretrain_set])
    root = model_version("gw-root", job=pretrain_job)
    tuning_set = DatasetVersion.objects.create(
        kind="quality_safety", status="ready", tokenizer_sha256=TOKENIZER
    )
    tuning_set.campaigns.set([campaign])
    tuning_job = TrainingJob.objects.create(
        kind=TrainingJob.Kind.FINETUNE_QUALITY_SAFETY, status="succeeded", base_model=root
    )
    tuning_job.datasets.set([tuning_set])
    child = model_version(
        "gw-child", parent=root, job=tuning_job, metrics={"initial": INITIAL, "final": FINAL}
    )
    client.force_login(users[Role.ADMIN])

    page = client.get(url("modelversion_change", child.pk)).content.decode()

    assert f'<a href="{url("modelversion_change", root.pk)}">gw-root</a>' in page
    assert url("trainingjob_change", tuning_job.pk) in page
    assert url("trainingjob_change", pretrain_job.pk) in page
    assert url("datasetversion_change", tuning_set.pk) in page
    assert url("datasetversion_change", pretrain_set.pk) in page
    assert "quality round 7" in page
    assert "6.2500" in page
    assert "0.750" in page
    assert url("modelversion_serve", child.pk) not in page  # admins do not serve
    assert "?base_model=" not in page  # nor retrain
    listing = client.get(url("modelversion_changelist")).content.decode()
    assert "2.5000" in listing


# The session and the user (2), the user's permissions (2) and groups, the content type, the version
# with its parent and job (twice: the page and the form), the ancestors, the jobs' datasets and
# their campaigns, the version's evaluations with their sets, and the evaluation sets of the
# "Evaluate" form.
MODEL_PAGE_QUERIES = 13


@pytest.mark.parametrize("length", [2, 8])
def test_the_model_page_costs_the_same_queries_however_deep_its_lineage(
    client, users, length: int, django_assert_num_queries: Any
) -> None:
    """The lineage was walked one query per ancestor, and two more for its job's datasets."""
    from tests.trainer.test_api import model_chains

    *ancestors, last = model_chains(versions=length, length=length)
    client.force_login(users[Role.RESEARCHER])
    ContentType.objects.clear_cache()  # whichever test runs first would fill it

    with django_assert_num_queries(MODEL_PAGE_QUERIES):
        page = client.get(url("modelversion_change", last.pk))

    assert page.status_code == 200
    html = page.content.decode()
    for ancestor in ancestors:
        assert f'<a href="{url("modelversion_change", ancestor.pk)}">{ancestor.name}</a>' in html
    assert html.count(f"chains of {length}</a>") == length  # every job's dataset names its campaign


def test_the_export_form_passes_filtering_thresholds_for_filtered_datasets_only() -> None:
    from trainer.forms import DatasetExportForm

    filtered = DatasetExportForm(
        {"kind": "filtered", "validation_percent": 10, "threshold_safe": "0.9", "threshold_sensible": ""}
    )
    labelled = DatasetExportForm({"kind": "pretrain", "validation_percent": 10, "threshold_safe": "0.9"})

    assert filtered.is_valid(), filtered.errors
    assert filtered.service_kwargs()["thresholds"] == {"safe": 0.9}
    assert labelled.is_valid(), labelled.errors
    assert "thresholds" not in labelled.service_kwargs()
