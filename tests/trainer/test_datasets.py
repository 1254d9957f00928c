"""Dataset export (issue 5): consensus labels and rewrites become token sequences in JSONL and
Parquet with a manifest; the same labels give the same sha256; ``datasets`` loads both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets as hf_datasets
import pytest

from annotation.models import ConsensusLabel
from annotation.services import assignments, campaigns, judgment_imports, rewrites
from tests.factories import dialog_with_turns
from tests.trainer.helpers import labelled_campaigns, tiny_model
from toolset.models import Document
from trainer import records, sources
from trainer import tokenizer as tokenizers
from trainer.models import DatasetVersion
from trainer.services import dataset_builds, requests, training_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def export(kind: str, campaigns: list[Any], **kwargs: Any) -> DatasetVersion:
    dataset = requests.dataset_request(kind=kind, campaigns=campaigns, enqueue=False, **kwargs)
    return dataset_builds.dataset_build(dataset_id=dataset.pk)


def rows(dataset: DatasetVersion) -> list[dict[str, Any]]:
    return [row for split in records.SPLITS for row in records.read_rows(dataset.path, split)]


def test_quality_safety_export_gives_discriminator_examples_and_filtered_generation() -> None:
    tiny_model()
    ssi, safety = labelled_campaigns(items=20, unsafe=(0, 2))

    dataset = export("quality_safety", [ssi, safety])

    assert dataset.status == "ready", dataset.error
    exported = rows(dataset)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in exported:
        by_kind.setdefault(row["kind"], []).append(row)
    # One discriminative example per label: 3 SSI attributes on 20 items + UNSAFE on 20 items.
    assert len(by_kind["discriminative"]) == 20 * 3 + 20
    labels = {(r["response"], r["attribute"]): r["label"] for r in by_kind["discriminative"]}
    for label in ConsensusLabel.objects.filter(attribute__in=["sensible", "unsafe"]).select_related("item"):
        assert labels[(label.item.response, label.attribute.upper())] == label.label
    # Generation data: the 10 good items, less the two labelled unsafe.
    generative = sorted(r["id"] for r in by_kind["generative"])
    assert len(generative) == 8
    assert not any(r["response"].startswith("Purple") for r in by_kind["generative"])
    # Every example of one dialog sits in one split.
    splits: dict[str, set[str]] = {}
    for row in exported:
        splits.setdefault(row["dialog"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits.values())
    # Masks: loss on the rating token only, and the text is the decoded ids.
    tokenizer = tokenizers.load(dataset.path / "tokenizer")
    row = by_kind["discriminative"][0]
    assert row["loss_mask"] == [0] * (len(row["input_ids"]) - 1) + [1]
    assert tokenizer.decode(row["input_ids"]) == row["text"]
    assert row["text"].endswith(f"<{row['attribute']}><{row['label']}>")

    manifest = json.loads((dataset.path / "manifest.json").read_text())
    assert manifest["label_balance"]["UNSAFE"] == {"0": 18, "1": 2}
    assert manifest["format"]["format_version"] == "2"
    assert {c["name"] for c in manifest["source_campaigns"]} == {ssi.name, safety.name}
    for name, entry in manifest["files"].items():
        assert records.sha256_of(dataset.path / name) == entry["sha256"]
    assert dataset.sha256 == records.sha256_of(dataset.path / "manifest.json")


def test_the_same_labels_give_the_same_sha256_and_a_changed_label_does_not() -> None:
    tiny_model()
    ssi, safety = labelled_campaigns(items=12)

    first = export("quality_safety", [ssi, safety])
    second = export("quality_safety", [ssi, safety])
    assert first.pk != second.pk
    assert first.sha256 == second.sha256
    assert first.files == second.files

    ConsensusLabel.objects.filter(item__key="item-3", attribute="sensible").update(label=1)
    third = export("quality_safety", [ssi, safety])
    assert third.sha256 != first.sha256


def test_incomplete_items_give_no_examples_and_the_manifest_counts_them() -> None:
    """An SSI item 2 of its 5 raters found good and a safety item 1 of its 3 raters found harmless
    (a campaign closed early): no labels, so no examples; each source campaign's count says so."""
    from tests.trainer.helpers import item

    tiny_model()
    ssi, safety = labelled_campaigns(items=6)
    ssi_lines = [
        {"item": item(100), "rater": f"late{n}", "attribute": attribute, "value": "yes"}
        for n in range(2)
        for attribute in ("sensible", "specific", "interesting")
    ]
    safety_lines = [
        {"item": item(101), "rater": "late", "attribute": "violates", "objective": "harm", "value": "no"}
    ]
    for campaign, lines in ((ssi, ssi_lines), (safety, safety_lines)):
        judgment_imports.judgments_import(
            campaign=campaign, lines=judgment_imports.parse_objects(lines), source="test"
        )

    dataset = export("quality_safety", [ssi, safety])

    assert dataset.status == "ready", dataset.error
    responses = {row["response"] for row in rows(dataset)}
    assert item(0)["response"] in responses
    assert item(100)["response"] not in responses
    assert item(101)["response"] not in responses
    manifest = json.loads((dataset.path / "manifest.json").read_text())
    counted = {
        c["name"]: (c["raters_per_item"], c["complete_items"], c["incomplete_items"])
        for c in manifest["source_campaigns"]
    }
    assert counted == {ssi.name: (5, 6, 1), safety.name: (3, 6, 1)}


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_the_files_load_with_hugging_face_datasets(fmt: str) -> None:
    tiny_model()
    ssi, safety = labelled_campaigns(items=12)
    dataset = export("quality_safety", [ssi, safety], validation_percent=30)

    loaded = hf_datasets.load_dataset(fmt, data_files=records.data_files(dataset.path, fmt))

    assert set(loaded) == {"train", "validation"}
    for split in records.SPLITS:
        expected = list(records.read_rows(dataset.path, split))
        assert (
            loaded[split].num_rows
            == len(expected)
            == dataset.counts["splits"][split]["discriminative"]
            + (dataset.counts["splits"][split].get("generative", 0))
        )
        assert loaded[split]["id"] == [r["id"] for r in expected]
        assert loaded[split]["input_ids"] == [r["input_ids"] for r in expected]


def test_a_campaign_without_labels_fails_with_the_cause_and_leaves_no_files() -> None:
    tiny_model()
    empty = campaigns.campaign_create(name="no labels", kind="ssi", empty=True)

    dataset = export("quality_safety", [empty])

    assert dataset.status == "failed"
    assert "no examples" in dataset.error
    assert not dataset.path.exists()


def test_requests_are_checked_before_anything_is_queued() -> None:
    rewrite = campaigns.campaign_create(name="rw", kind="groundedness_rewrite", empty=True)
    with pytest.raises(requests.TrainerError, match="no model version yet"):
        requests.dataset_request(kind="groundedness", campaigns=[rewrite])
    tiny_model()
    with pytest.raises(
        requests.TrainerError,
        match="takes campaigns of kind “Sensibleness, specificity, interestingness”, “Safety” or "
        "“Groundedness: evaluation”; not: rw",
    ):
        requests.dataset_request(kind="quality_safety", campaigns=[rewrite])
    with pytest.raises(requests.TrainerError, match="choose at least one campaign"):
        requests.dataset_request(kind="groundedness", campaigns=[])
    with pytest.raises(requests.TrainerError, match="kind must be one of"):
        requests.dataset_request(kind="everything", campaigns=[])
    assert DatasetVersion.objects.count() == 1  # the tiny model's pretrain dataset


def test_groundedness_export_renders_the_research_of_a_rewrite() -> None:
    from groundwork.roles import Role
    from tests.annotation.helpers import JAGUAR_URL, rewrite_campaign, rewrite_corpus
    from tests.factories import UserFactory

    tiny_model()
    rewrite_corpus()
    campaign = rewrite_campaign()
    worker = UserFactory(role=Role.CROWDWORKER)
    lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    first = rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="jaguar")
    rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="largest cat Americas")
    text = f"The jaguar is the largest cat in the Americas [Jaguar]({JAGUAR_URL})."
    rewrites.rewrite_submit(
        assignment_id=lease.pk, worker=worker, claims_external=True, common_knowledge=False, rewrite=text
    )

    dataset = export("groundedness", [campaign])

    assert dataset.status == "ready", dataset.error
    exported = sorted(rows(dataset), key=lambda r: r["id"])
    assert [(r["kind"], r["outcome_speaker"], r["outcome"]) for r in exported] == [
        ("research_query", "TS", "jaguar"),
        ("research_step", "TS", "largest cat Americas"),
        ("research_step", "User", text),
    ]
    last = exported[-1]
    # Each step shows the model the result's title and URL (what the rewrite cites), then its snippet.
    assert (first[0].title, first[0].url) == ("Jaguar", JAGUAR_URL)
    assert last["research"][0] == {
        "query": "jaguar",
        "title": "Jaguar",
        "url": JAGUAR_URL,
        "snippet": first[0].snippet,
    }
    assert f"<TS> jaguar<snippet> [Jaguar]({JAGUAR_URL}) {first[0].snippet}<TS>" in last["text"]
    assert last["text"].endswith(f"<User> {text}<eos>")


def fine_tuned(base: Any) -> Any:
    """A model with discriminators: the tiny model fine-tuned for a few steps on labels."""
    ssi, safety = labelled_campaigns(items=12)
    labels = export("quality_safety", [ssi, safety])
    job = requests.training_request(
        kind="finetune_quality_safety",
        datasets=[labels],
        base_model=base,
        hyperparameters={"steps": 3},
        enqueue=False,
    )
    job = training_jobs.training_run(job_id=job.pk)
    assert job.status == "succeeded", job.error
    return requests.model_serve(model=job.model_version)


def test_filtering_scores_every_pretraining_turn_and_counts_what_it_keeps_and_drops() -> None:
    base = tiny_model()
    with pytest.raises(requests.TrainerError, match="has no discriminators yet"):
        requests.dataset_request(kind="filtered", tokenizer_source=base)
    model = fine_tuned(base)

    everything = export(
        "filtered", [], purposes=["pretrain"], thresholds={k: 0.0 for k in requests.DEFAULT_THRESHOLDS}
    )
    nothing = export(
        "filtered",
        [],
        purposes=["pretrain"],
        thresholds={"safe": 0, "sensible": 0, "specific": 0, "interesting": 1.0},
    )

    assert everything.status == "ready", everything.error
    report = json.loads((everything.path / "manifest.json").read_text())["filter"]
    assert report["model"] == model.name
    assert report["scored"] == report["kept"] == 10  # one answer in each of the 10 pretrain dialogs
    assert all(r["kind"] == "generative" for r in rows(everything))
    assert nothing.status == "failed"
    assert "no examples" in nothing.error


def test_a_quality_safety_build_labels_what_the_raters_said_even_when_no_consensus_task_ran() -> None:
    """A rater's last judgment queues the item's consensus after commit; with the broker down it
    never ran. The build recomputes its campaigns' consensus first, so the item is in it."""
    from groundwork.roles import Role
    from tests.annotation.helpers import ssi_campaign
    from tests.factories import UserFactory

    tiny_model()
    campaign = ssi_campaign(items=1, raters=1, name="unqueued")
    worker = UserFactory(role=Role.CROWDWORKER)
    assignment = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    assert assignment is not None
    assignments.judgment_submit(
        assignment_id=assignment.pk, worker=worker, answers={"sensible": "yes", "specific": "no"}
    )
    assert not ConsensusLabel.objects.exists()  # this test runs no on-commit callback: no task ran

    dataset = export("quality_safety", [campaign])

    assert dataset.status == "ready", dataset.error
    labels = {(r["attribute"], r["label"]) for r in rows(dataset) if r["kind"] == "discriminative"}
    assert labels == {("SENSIBLE", 1), ("SPECIFIC", 0), ("INTERESTING", 0)}


def test_crowd_ratings_of_dialog_turns_become_a_dataset_split_by_dialog_without_unsafe_answers() -> None:
    """From crowdworkers' submissions on turn-bound items of an SSI and a safety campaign made from
    dialogs, through consensus, to the rows: the SSI items and the safety items of one turn are
    different items, matched by their turn; every row of a dialog lies in that dialog's split."""
    from tests.trainer.helpers import CROWD_DIALOGS, CROWD_UNSAFE, crowd_answer, crowd_rated_campaigns

    tiny_model()
    ssi, safety = crowd_rated_campaigns()

    dataset = export("quality_safety", [ssi, safety], validation_percent=50)

    assert dataset.status == "ready", dataset.error
    exported = rows(dataset)
    # Consensus was computed from the submissions: 3 SSI labels and UNSAFE for each of 12 turns.
    discriminative = {
        (r["response"], r["attribute"]): r["label"] for r in exported if r["kind"] == "discriminative"
    }
    assert len(discriminative) == 2 * CROWD_DIALOGS * 4
    for i in range(CROWD_DIALOGS):
        good, purple = crowd_answer(i), f"Purple {i}."
        assert [discriminative[(good, a)] for a in ("SENSIBLE", "SPECIFIC", "INTERESTING")] == [1, 1, 1]
        assert [discriminative[(purple, a)] for a in ("SENSIBLE", "SPECIFIC", "INTERESTING")] == [0, 0, 0]
        assert discriminative[(good, "UNSAFE")] == int(i in CROWD_UNSAFE)
        assert discriminative[(purple, "UNSAFE")] == 0
    # Generation data: the good answers, less those the safety campaign found unsafe.
    generative = sorted(r["response"] for r in exported if r["kind"] == "generative")
    assert generative == sorted(crowd_answer(i) for i in range(CROWD_DIALOGS) if i not in CROWD_UNSAFE)
    # Split by dialog: a turn-bound item's row names its dialog, and a dialog's rows share its split.
    by_dialog: dict[str, set[str]] = {}
    for row in exported:
        by_dialog.setdefault(row["dialog"], set()).add(row["split"])
    assert by_dialog == {
        f"dialog:crowd-{i}": {records.split_of(f"dialog:crowd-{i}", 50)} for i in range(CROWD_DIALOGS)
    }
    assert {row["split"] for row in exported} == {"train", "validation"}
    assert ConsensusLabel.objects.filter(item__campaign=safety, attribute="unsafe", label=1).count() == 2


def test_a_pretrain_dataset_takes_documents_as_passages_in_the_train_split_and_counts_them() -> None:
    for i, topic in enumerate(["cats", "rain", "music", "tea", "chess", "boats"]):
        dialog_with_turns(
            [f"What about {topic}?", f"I like {topic}."], external_id=f"d-{i}", purpose="pretrain"
        )
    long_body = " ".join(f"Owls hunt at night in forest number {n}." for n in range(12))  # > 240 chars
    for i, (title, body) in enumerate(
        [("Owl", long_body), ("Kite", "A kite flies. It has a string!"), ("Tea", "Tea is a drink.")]
    ):
        Document.objects.create(url=f"https://example.org/{i}", title=title, body=body)
    owl_passages = sources.passages(long_body)

    dialogs_only = export("pretrain", [], validation_percent=50)
    two = export("pretrain", [], validation_percent=50, documents=2)
    every = export("pretrain", [], validation_percent=50, documents=10)

    assert len(owl_passages) > 1
    assert all(len(p) <= sources.DOCUMENT_PASSAGE_CHARS for p in owl_passages)
    assert " ".join(owl_passages) == long_body
    manifest = json.loads((every.path / "manifest.json").read_text())
    assert manifest["counts"]["train"]["document"] == len(owl_passages) + 2
    assert "document" not in manifest["counts"]["validation"]
    assert manifest["filters"]["documents"] == 10
    assert manifest["tokenizer"]["trained_on"] == "the dataset's dialogs and documents"
    assert "document" in manifest["format"]["kinds"]
    assert every.counts["splits"] == manifest["counts"]
    # Documents are not dialogs: the dialogs' split and examples are the same with or without them.
    generative = {split: dialogs_only.counts["splits"][split].get("generative") for split in records.SPLITS}
    assert {split: every.counts["splits"][split].get("generative") for split in records.SPLITS} == generative
    assert "document" not in dialogs_only.counts["splits"]["train"]
    assert "documents" not in dialogs_only.filters
    two_documents = {r["dialog"] for r in rows(two) if r["kind"] == "document"}
    assert len(two_documents) == 2
    kite = next(
        r for r in rows(every) if r["kind"] == "document" and r["dialog"] == "document:https://example.org/1"
    )
    assert kite["split"] == "train"
    assert kite["text"] == " Kite\nA kite flies. It has a string!<eos>"
    assert all(kite["loss_mask"])
    tokenizer = tokenizers.load(every.path / "tokenizer")
    assert tokenizer.decode(kite["input_ids"]) == kite["text"]


def test_documents_are_refused_where_they_do_not_belong() -> None:
    with pytest.raises(requests.TrainerError, match="documents must be a number of documents"):
        requests.dataset_request(kind="pretrain", documents=-3, enqueue=False)
    with pytest.raises(requests.TrainerError, match="not a dataset of model versions' turns"):
        requests.dataset_request(kind="pretrain", documents=5, model_versions=["gw-1"], enqueue=False)
    assert not DatasetVersion.objects.exists()
