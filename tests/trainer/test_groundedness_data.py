"""The groundedness dataset says what its raters said (issue 14): a response the raters found in
need of no research teaches the model to answer without querying, research starts from the base
the model drafted, and the candidates the raters labelled become CORRECT examples by majority."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from annotation.models import Assignment, Campaign
from annotation.services import assignments, campaigns, rewrites
from dialogs.models import Candidate, Speaker
from groundwork.roles import Role
from tests.annotation.helpers import JAGUAR_URL, rewrite_corpus
from tests.factories import DialogFactory, TurnFactory, UserFactory, dialog_with_turns
from tests.trainer.helpers import tiny_model
from trainer import records
from trainer.models import DatasetVersion
from trainer.services import dataset_builds, requests

pytestmark = pytest.mark.django_db

NO_CLAIMS = "I had a cup of tea this morning."
COMMON = "Water is wet."
SMALLEST = "The jaguar is the smallest cat in Africa."
DISPUTED = "Jaguars live in Africa."
REWRITTEN = f"The jaguar is the largest cat in the Americas [Jaguar]({JAGUAR_URL})."

Answer = Callable[[int, Assignment], dict[str, Any]]


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Path) -> None:
    settings.ARTIFACTS_DIR = tmp_path


def campaign_of(*responses: str, raters: int = 3) -> Campaign:
    """A rewrite campaign over one groundedness dialog per response (its one model turn)."""
    for i, response in enumerate(responses):
        dialog_with_turns([f"Question {i}?", response], external_id=f"g-{i}", purpose="groundedness")
    return campaign_over_dialogs(raters)


def campaign_over_dialogs(raters: int) -> Campaign:
    return campaigns.campaign_create(
        name="grounding",
        kind="groundedness_rewrite",
        filters=campaigns.DialogFilters(purpose="groundedness"),
        raters_per_item=raters,
    )


def researched(worker: Any, lease: Assignment) -> dict[str, Any]:
    """Research "jaguar" in the assignment's session and rewrite, citing the result."""
    rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="jaguar")
    return {"claims_external": True, "common_knowledge": False, "rewrite": REWRITTEN}


def rate(campaign: Campaign, raters: int, answer: Answer) -> None:
    """Each of ``raters`` workers answers every item: ``answer(rater, lease)`` gives the
    submission (a callable value is called with the worker and lease first: research)."""
    for rater in range(raters):
        worker = UserFactory(role=Role.CROWDWORKER)
        while (lease := assignments.assignment_lease_next(worker=worker, campaign=campaign)) is not None:
            submission = answer(rater, lease)
            if callable(submission):
                submission = submission(worker, lease)
            rewrites.rewrite_submit(assignment_id=lease.pk, worker=worker, **submission)


def export(campaign: Campaign) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    dataset = requests.dataset_request(kind="groundedness", campaigns=[campaign], enqueue=False)
    dataset = dataset_builds.dataset_build(dataset_id=dataset.pk)
    assert dataset.status == DatasetVersion.Status.READY, dataset.error
    rows = [row for split in records.SPLITS for row in records.read_rows(dataset.path, split)]
    return rows, json.loads((dataset.path / "manifest.json").read_text())


def test_a_response_the_raters_found_needs_no_research_teaches_answering_it_unchanged() -> None:
    tiny_model()
    rewrite_corpus()
    campaign = campaign_of(NO_CLAIMS, COMMON, SMALLEST, DISPUTED)

    def answer(rater: int, lease: Assignment) -> Any:
        response = lease.item.response
        if response == NO_CLAIMS or (response == SMALLEST and rater < 2):
            return {"claims_external": False, "common_knowledge": None}
        if response == COMMON or (response == DISPUTED and rater == 2):
            return {"claims_external": True, "common_knowledge": True}
        return researched  # SMALLEST: the third rater; DISPUTED: the first two

    rate(campaign, 3, answer)
    rows, manifest = export(campaign)

    task1 = sorted(
        (r["response"], r["outcome_speaker"], r["outcome"]) for r in rows if r["kind"] == "research_query"
    )
    # No claims (all three), common knowledge (all three), no claims (two of three): the base
    # goes to the user as it is. Two raters of DISPUTED did not know it to be true: researched.
    assert task1 == sorted(
        [
            (NO_CLAIMS, "User", NO_CLAIMS),
            (COMMON, "User", COMMON),
            (SMALLEST, "User", SMALLEST),
            (DISPUTED, "TS", "jaguar"),
            (DISPUTED, "TS", "jaguar"),
        ]
    )
    answered = next(r for r in rows if r["response"] == NO_CLAIMS)
    assert answered["text"].endswith(f"<sentinel> {NO_CLAIMS}<User> {NO_CLAIMS}<eos>")
    assert sum(answered["loss_mask"]) > 2  # the outcome: <User>, the base and <eos>
    steps = [r for r in rows if r["kind"] == "research_step"]
    assert [(r["response"], r["outcome"]) for r in steps] == [(DISPUTED, REWRITTEN)] * 2
    # The third rater's rewrite of SMALLEST is not what the raters said: left out, counted.
    assert manifest["skipped"]["rewrites_of_items_needing_no_research"] == 1
    assert manifest["counts"]["train"].get("research_query", 0) + manifest["counts"]["validation"].get(
        "research_query", 0
    ) == len(task1)
    assert manifest["format"]["format_version"] == "2"
    assert "<User> base<eos>" in manifest["format"]["rules"]
    assert "[title](url) snippet" in manifest["format"]["rules"]


def model_turn(external_id: str, text: str, base: str) -> None:
    """A groundedness dialog whose model turn the model researched: ``base`` became ``text``."""
    dialog = DialogFactory(external_id=external_id, purpose="groundedness")
    TurnFactory(dialog=dialog, index=0, speaker=Speaker.USER, text="Tell me about jaguars.")
    research = [{"query": "jaguar", "title": "Jaguar", "url": JAGUAR_URL, "snippet": "It is large."}]
    TurnFactory(dialog=dialog, index=1, speaker=Speaker.MODEL, text=text, base_text=base, research=research)


def test_research_of_a_turn_the_model_researched_starts_from_the_base_it_drafted() -> None:
    tiny_model()
    rewrite_corpus()
    base, grounded = "Jaguars are small.", f"Jaguars are large cats [Jaguar]({JAGUAR_URL})."
    model_turn("researched", grounded, base)
    model_turn("no-claims", "I like them.", "Jaguars? Cats!")
    campaign = campaign_over_dialogs(raters=1)

    def answer(rater: int, lease: Assignment) -> Any:
        if lease.item.response == grounded:
            return researched
        return {"claims_external": False, "common_knowledge": None}

    rate(campaign, 1, answer)
    rows, manifest = export(campaign)

    assert sorted((r["kind"], r["outcome_speaker"]) for r in rows) == [
        ("research_query", "TS"),
        ("research_step", "User"),
    ]
    for row in rows:
        assert row["response"] == base  # what the research loop starts from at inference
        assert f"<sentinel> {base}<TS> jaguar" in row["text"]
        assert grounded not in row["text"]
    # The raters judged "I like them.", the research's outcome, not the base the model drafted:
    # no example says that base needed no research.
    assert manifest["skipped"]["no_research_items_researched_by_the_model"] == 1


def test_candidates_the_raters_labelled_become_correct_examples_by_majority() -> None:
    tiny_model()
    dialog = dialog_with_turns(
        ["Where do jaguars live?", "In the Americas."], external_id="c", purpose="groundedness"
    )
    turn = dialog.turns.get(index=1)
    right, wrong, split, _unlabelled = (
        Candidate.objects.create(turn=turn, index=i, text=text)
        for i, text in enumerate(["In the Americas.", "In Africa.", "In zoos.", "Everywhere."])
    )
    campaign = campaign_over_dialogs(raters=3)
    labels = [
        {right.pk: "correct", wrong.pk: "incorrect", split.pk: "correct"},
        {right.pk: "correct", wrong.pk: "incorrect", split.pk: "incorrect"},
        {right.pk: "incorrect"},  # the third rater labelled one candidate only
    ]

    rate(
        campaign,
        3,
        lambda rater, lease: {
            "claims_external": False,
            "common_knowledge": None,
            "candidate_labels": labels[rater],
        },
    )
    rows, manifest = export(campaign)

    correct = {
        r["response"]: (r["label"], round(r["soft_label"], 3)) for r in rows if r["kind"] == "discriminative"
    }
    # Majority of those who labelled it: 2 of 3 correct; 2 of 2 incorrect; 1-1 is a tie, left out.
    assert correct == {"In the Americas.": (1, 0.667), "In Africa.": (0, 0.0)}
    row = next(r for r in rows if r["kind"] == "discriminative" and r["response"] == "In the Americas.")
    assert row["attribute"] == "CORRECT"
    assert row["context"] == [{"speaker": "user", "text": "Where do jaguars live?"}]
    assert row["text"].endswith("<sentinel> In the Americas.<CORRECT><1>")
    assert row["loss_mask"] == [0] * (len(row["loss_mask"]) - 1) + [1]
    assert manifest["skipped"]["candidate_label_ties"] == 1
    assert manifest["label_balance"]["CORRECT"] == {"0": 1, "1": 1}
