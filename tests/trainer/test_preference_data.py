"""Preference data from the same crowd work (issue 17, part 3): a ``preference`` dataset pairs a
crowd rewrite over the response it rewrote, correct candidates over incorrect ones, better-rated
responses over worse ones and side-by-side winners over losers, and labels rated responses for
KTO; in the forms TRL reads, loadable by ``datasets``, held-out dialogs left out, counted by source.
Real PostgreSQL, the real services and the real build path (in the foreground)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import Assignment, Campaign
from annotation.services import campaigns, evaluation_tasks, evaluations, judgment_imports
from dialogs.evaluation_sets import evaluation_set_from_dialogs
from dialogs.models import Candidate, Dialog
from groundwork.roles import Role
from tests.annotation.evaluation_helpers import answer_all, make_set, workers
from tests.annotation.helpers import rewrite_corpus
from tests.factories import dialog_with_turns
from tests.trainer.helpers import tiny_model
from tests.trainer.test_groundedness_data import REWRITTEN, campaign_over_dialogs, rate, researched
from trainer import records, sources
from trainer.forms import DatasetExportForm
from trainer.models import DatasetVersion
from trainer.services import dataset_builds, preference_builds, requests

pytestmark = pytest.mark.django_db

CLAIM = "Jaguars live in Africa."
PAIR_COLUMNS = ["id", "split", "source", "dialog", "prompt", "chosen", "rejected", "reason"]
KTO_COLUMNS = ["id", "split", "source", "dialog", "prompt", "completion", "label", "reason"]


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Path) -> None:
    settings.ARTIFACTS_DIR = tmp_path


def export(*chosen: Campaign, validation_percent: int = 0) -> DatasetVersion:
    dataset = requests.dataset_request(
        kind="preference", campaigns=chosen, validation_percent=validation_percent, enqueue=False
    )
    dataset = dataset_builds.dataset_build(dataset_id=dataset.pk)
    assert dataset.status == DatasetVersion.Status.READY, dataset.error
    return dataset


def pairs(dataset: DatasetVersion) -> list[dict[str, Any]]:
    return [row for split in records.SPLITS for row in records.read_rows(dataset.path, split, columns=None)]


def unpaired(dataset: DatasetVersion) -> list[dict[str, Any]]:
    return [
        row
        for split in records.SPLITS
        for row in records.read_rows(
            dataset.path, split, columns=None, prefix=preference_builds.UNPAIRED_PREFIX
        )
    ]


def manifest(dataset: DatasetVersion) -> dict[str, Any]:
    return json.loads((dataset.path / "manifest.json").read_text())


def rewrite_campaign_with_candidates() -> Campaign:
    """A rewrite campaign of two groundedness dialogs: ``CLAIM``, which every rater researches and
    rewrites, and a turn whose four sampled candidates the three raters label."""
    rewrite_corpus()
    dialog_with_turns(["Where do jaguars live?", CLAIM], external_id="g-claim", purpose="groundedness")
    sampled = dialog_with_turns(
        ["Which cat is largest in the Americas?", "The jaguar."],
        external_id="g-sampled",
        purpose="groundedness",
    )
    turn = sampled.turns.get(index=1)
    right, wrong, split, _ = (
        Candidate.objects.create(turn=turn, index=i, text=text)
        for i, text in enumerate(["The jaguar.", "The lion.", "The puma.", "The ocelot."])
    )
    campaign = campaign_over_dialogs(raters=3)
    labels = [
        {right.pk: "correct", wrong.pk: "incorrect", split.pk: "correct"},
        {right.pk: "correct", wrong.pk: "incorrect", split.pk: "incorrect"},
        {right.pk: "incorrect"},
    ]

    def answer(rater: int, lease: Assignment) -> Any:
        if lease.item.response == CLAIM:
            return researched
        return {"claims_external": False, "common_knowledge": None, "candidate_labels": labels[rater]}

    rate(campaign, 3, answer)
    return campaign


def test_a_rewrite_is_preferred_over_what_it_rewrote_and_correct_candidates_over_incorrect() -> None:
    tiny_model()
    dataset = export(rewrite_campaign_with_candidates())

    rows = {row["source"]: row for row in pairs(dataset)}
    by_source = sorted(row["source"] for row in pairs(dataset))
    # Three raters rewrote CLAIM; of the candidates, The jaguar. (2 of 3 correct) beats The lion.
    # (2 of 2 incorrect); The puma. (1-1) is a tie and gives no pair.
    assert by_source == ["candidates", "rewrite", "rewrite", "rewrite"]
    rewrite = rows["rewrite"]
    assert rewrite["prompt"] == [{"role": "user", "content": "Where do jaguars live?"}]
    assert rewrite["chosen"] == [{"role": "assistant", "content": REWRITTEN}]
    assert rewrite["rejected"] == [{"role": "assistant", "content": CLAIM}]
    candidate = rows["candidates"]
    assert candidate["prompt"] == [{"role": "user", "content": "Which cat is largest in the Americas?"}]
    assert (candidate["chosen"][0]["content"], candidate["rejected"][0]["content"]) == (
        "The jaguar.",
        "The lion.",
    )
    assert "correct" in candidate["reason"]
    found = manifest(dataset)
    assert found["pairs_by_source"] == {"rewrite": 3, "candidates": 1, "ratings": 0, "pairwise": 0}
    assert found["counts"]["train"] == {"pairs/rewrite": 3, "pairs/candidates": 1}
    assert found["skipped"]["candidate_label_ties"] == 1
    assert dataset.counts["splits"] == found["counts"]
    assert unpaired(dataset) == []  # KTO rows come from SSI and safety labels only


def _rated(key: str, context: str, response: str) -> dict[str, Any]:
    return {"key": key, "context": [{"speaker": "user", "text": context}], "response": response}


def rating_campaigns() -> tuple[Campaign, Campaign]:
    """SSI (3 raters) and safety (3 raters) labels, imported, of three responses to one prompt:
    ``good`` (sensible, specific, interesting; safe), ``nonsense`` (not sensible; safe) and
    ``harmful`` (sensible, specific, interesting; unsafe to two of three), and of ``lone``, the
    only response to another prompt (sensible, not specific; safe)."""
    from annotation.models import SafetyObjective

    SafetyObjective.objects.get_or_create(slug="harm", defaults={"name": "Harm", "guidance": "Harm."})
    ssi = campaigns.campaign_create(name="ssi", kind="ssi", empty=True, raters_per_item=3)
    safety = campaigns.campaign_create(
        name="safety", kind="safety", empty=True, objectives=["harm"], raters_per_item=3
    )
    prompt = "What should I cook tonight?"
    responses = {
        "good": (_rated("good", prompt, "A mushroom risotto with thyme."), "yes", "yes", False),
        "nonsense": (_rated("nonsense", prompt, "Blue seven."), "no", "no", False),
        "harmful": (_rated("harmful", prompt, "Eat raw chicken."), "yes", "yes", True),
        "lone": (_rated("lone", "How are you?", "Okay."), "yes", "no", False),
    }
    ssi_lines, safety_lines = [], []
    for item, sensible, specific, harmful in responses.values():
        for rater in range(3):
            answers = {"sensible": sensible}
            if sensible == "yes":
                answers |= {"specific": specific, "interesting": specific}
            ssi_lines += [
                {"item": item, "rater": f"r{rater}", "attribute": a, "value": v} for a, v in answers.items()
            ]
            safety_lines.append(
                {
                    "item": item,
                    "rater": f"s{rater}",
                    "attribute": "violates",
                    "objective": "harm",
                    "value": "yes" if harmful and rater < 2 else "no",
                }
            )
    for campaign, lines in ((ssi, ssi_lines), (safety, safety_lines)):
        judgment_imports.judgments_import(
            campaign=campaign,
            lines=judgment_imports.parse_jsonl([json.dumps(line).encode() for line in lines]),
            source="test",
        )
    return ssi, safety


def test_rated_responses_to_one_prompt_are_paired_safe_first_then_by_ssi_and_labelled_for_kto() -> None:
    tiny_model()
    dataset = export(*rating_campaigns())

    found = {(r["chosen"][0]["content"], r["rejected"][0]["content"]): r["reason"] for r in pairs(dataset)}
    assert found == {
        ("A mushroom risotto with thyme.", "Blue seven."): "SSI sum 3 over 0",
        ("A mushroom risotto with thyme.", "Eat raw chicken."): "safe over unsafe",
        # Safety decides first: a safe response is preferred over an unsafe one, sensible or not.
        ("Blue seven.", "Eat raw chicken."): "safe over unsafe",
    }
    row = pairs(dataset)[0]
    assert row["prompt"] == [{"role": "user", "content": "What should I cook tonight?"}]
    kto = {r["completion"][0]["content"]: (r["label"], r["reason"]) for r in unpaired(dataset)}
    # "Okay." is sensible but not specific: neither desirable nor undesirable, no row.
    assert kto == {
        "A mushroom risotto with thyme.": (True, "sensible and specific, not unsafe"),
        "Blue seven.": (False, "not sensible"),
        "Eat raw chicken.": (False, "unsafe"),
    }
    assert all(r["prompt"][-1]["role"] == "user" for r in unpaired(dataset))
    found_manifest = manifest(dataset)
    assert found_manifest["pairs_by_source"]["ratings"] == 3
    assert found_manifest["unpaired_by_source"] == {"ratings": 3}
    assert found_manifest["label_balance"] == {"KTO": {"0": 2, "1": 1}}
    assert found_manifest["skipped"]["responses_without_a_kto_label"] == 1
    assert "safe before unsafe" in found_manifest["preference_rules"]
    # Which aggregation made each label: per campaign (kept from the other kinds) and per source.
    assert {c["label_aggregation"]["labels"] for c in found_manifest["source_campaigns"]} == {"majority"}
    assert "ConsensusLabel" in found_manifest["label_sources"]["ratings"]


def pairwise_campaign() -> Campaign:
    """gw-1 and gw-2 answer three contexts; three raters choose side by side: gw-2 wins context
    0, gw-1 wins context 1, context 2 is a tie (one vote each and one tie)."""
    evaluation_set = make_set(contexts=3)
    answer_all(evaluation_set, "gw-1")
    answer_all(evaluation_set, "gw-2")
    campaign = evaluations.pairwise_campaign_create(
        evaluation_set=evaluation_set, responder_a="gw-1", responder_b="gw-2", created_by=None
    ).campaign
    wins = {0: ["b", "b", "a"], 1: ["a", "a", "tie"], 2: ["a", "b", "tie"]}
    from annotation.services import assignments

    for rater, worker in enumerate(workers(3)):
        while (lease := assignments.assignment_lease_next(worker=worker, campaign=campaign)) is not None:
            wanted = wins[lease.item.evaluation_context.index][rater]
            first = lease.item.pair["first"]
            choice = "tie" if wanted == "tie" else ("1" if wanted == first else "2")
            evaluation_tasks.pairwise_submit(assignment_id=lease.pk, worker=worker, choice=choice)
    return campaign


def test_side_by_side_winners_are_preferred_over_losers_in_the_validation_split_only() -> None:
    tiny_model()
    dataset = export(pairwise_campaign(), validation_percent=0)

    found = sorted(
        (r["chosen"][0]["content"], r["rejected"][0]["content"], r["split"]) for r in pairs(dataset)
    )
    assert found == [("Answer A1.", "Answer B1.", "validation"), ("Answer B0.", "Answer A0.", "validation")]
    row = next(r for r in pairs(dataset) if r["chosen"][0]["content"] == "Answer B0.")
    assert row["prompt"] == [{"role": "user", "content": "Question 0?"}]
    assert row["source"] == "pairwise"
    found_manifest = manifest(dataset)
    assert found_manifest["skipped"]["pairwise_ties"] == 1
    assert found_manifest["counts"] == {"train": {}, "validation": {"pairs/pairwise": 2}}
    assert "never trained on" in found_manifest["pairwise_split"]


def test_held_out_dialogs_give_no_pairs_and_are_counted() -> None:
    tiny_model()
    campaign = rewrite_campaign_with_candidates()
    # The dialog of the rewritten CLAIM becomes an evaluation context: held out from now on.
    evaluation_set_from_dialogs(name="held", dialogs=[Dialog.objects.get(external_id="g-claim")])

    dataset = export(campaign)

    assert {row["source"] for row in pairs(dataset)} == {"candidates"}
    assert CLAIM not in json.dumps(pairs(dataset))
    assert manifest(dataset)["skipped"][sources.HELD_OUT] == 1
    assert manifest(dataset)["pairs_by_source"]["rewrite"] == 0


def test_the_files_load_with_datasets_in_the_columns_trl_reads() -> None:
    tiny_model()
    ssi, safety = rating_campaigns()
    dataset = export(ssi, safety, rewrite_campaign_with_candidates(), validation_percent=0)
    cache = str(dataset.path.parent / "hf-cache")

    for fmt in ("json", "parquet"):
        # validation_percent 0: the validation files are empty, which datasets refuses to load.
        files = records.data_files(dataset.path, fmt)
        train = datasets.load_dataset(fmt, data_files={"train": files["train"]}, cache_dir=cache)["train"]
        assert train.column_names == PAIR_COLUMNS
        assert train.num_rows == 3 + 3 + 1  # ratings, rewrites, candidates
        first = train[0]
        for column in ("prompt", "chosen", "rejected"):
            assert all(set(message) == {"role", "content"} for message in first[column])
        assert first["chosen"][0]["role"] == "assistant"
        kto_files = records.data_files(dataset.path, fmt, prefix=preference_builds.UNPAIRED_PREFIX)
        kto = datasets.load_dataset(fmt, data_files={"train": kto_files["train"]}, cache_dir=cache)["train"]
        assert kto.column_names == KTO_COLUMNS
        assert kto.features["label"].dtype == "bool"
        assert sorted(kto["label"]) == [False, False, True]
    # Every file is hashed in the row and the manifest, as every dataset's.
    assert set(dataset.files) >= {"train.jsonl", "kto_train.parquet", "manifest.json"}
    assert dataset.files["train.jsonl"]["sha256"] == records.sha256_of(dataset.path / "train.jsonl")
    assert dataset.sha256 == records.sha256_of(dataset.path / "manifest.json")


def test_the_kind_is_chosen_from_the_api_and_the_admin_form_with_side_by_side_campaigns(
    api_client: APIClient, users: dict[Role, Any]
) -> None:
    tiny_model()
    campaign = pairwise_campaign()
    api_client.force_authenticate(users[Role.RESEARCHER])

    response = api_client.post(
        "/api/v1/datasets/", {"kind": "preference", "campaigns": [campaign.pk]}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["kind"] == "preference"
    refused = api_client.post(
        "/api/v1/datasets/", {"kind": "quality_safety", "campaigns": [campaign.pk]}, format="json"
    )
    assert refused.status_code == 400
    form = DatasetExportForm(
        data={"kind": "preference", "campaigns": [campaign.pk], "validation_percent": 10}
    )
    assert form.is_valid(), form.errors
    assert form.service_kwargs()["kind"] == "preference"


def test_an_export_without_campaigns_names_the_kinds_a_preference_dataset_takes_by_their_labels(
    client: Client, users: dict[Role, Any]
) -> None:
    tiny_model()
    client.force_login(users[Role.RESEARCHER])

    response = client.post(
        reverse("admin:trainer_datasetversion_add"), {"kind": "preference", "validation_percent": 10}
    )

    assert response.status_code == 200
    assert (
        "choose at least one campaign of kind “Sensibleness, specificity, interestingness”, “Safety”, "
        "“Groundedness: rewrite with sources” or “Side by side: the better of two responses”"
    ) in response.content.decode()
    assert not DatasetVersion.objects.filter(kind=DatasetVersion.Kind.PREFERENCE).exists()
