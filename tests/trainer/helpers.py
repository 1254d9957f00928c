"""Builders shared by the trainer tests: labelled campaigns (through the judgment import, as an
outside rater pool would deliver them, or rated by crowdworkers through the API), and a tiny
first model (through the services, in the foreground)."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.test import APIClient

from annotation.models import Campaign, SafetyObjective
from annotation.services import campaigns, judgment_imports
from groundwork.roles import Role
from tests.factories import UserFactory, dialog_with_turns
from trainer.models import ModelVersion
from trainer.services import training_jobs

TINY = {"d_model": 32, "n_layer": 2, "n_head": 2, "d_ff": 64}
TOPICS = ["cats", "rain", "music", "tea", "chess", "boats", "maps", "bread", "owls", "snow"]


def tiny_model(*, steps: int = 5) -> ModelVersion:
    """A tokenizer and a tiny pre-trained model on a few dialogs, serving."""
    for i, topic in enumerate(TOPICS):
        dialog_with_turns(
            [f"What do you think about {topic}?", f"I like {topic} a lot, especially in the morning."],
            external_id=f"pretrain-{i}",
            purpose="pretrain",
        )
    return training_jobs.first_model_ensure(steps=steps, model=TINY, vocab_size=400, say=lambda _: None)


def _answers(index: int) -> list[dict[str, str]]:
    """Five raters' SSI answers for item ``index``: a good response (all yes by majority) for even
    items, a not-sensible one for odd items."""
    good = index % 2 == 0
    yes = ["yes", "yes", "yes", "no", "maybe"] if good else ["no", "no", "no", "yes", "yes"]
    return [
        {"sensible": value, "specific": "yes", "interesting": "yes" if good else "no"}
        if value == "yes"
        else {"sensible": value}
        for value in yes
    ]


def item(index: int) -> dict[str, Any]:
    topic = TOPICS[index % len(TOPICS)]
    response = (
        f"{topic.title()} are wonderful, I read about {topic} daily ({index})."
        if index % 2 == 0
        else f"Purple {index}."
    )
    return {
        "key": f"item-{index}",
        "context": [{"speaker": "user", "text": f"Tell me about {topic} ({index})."}],
        "response": response,
    }


def _import(campaign: Campaign, lines: list[dict[str, Any]]) -> None:
    encoded = [json.dumps(line).encode() for line in lines]
    judgment_imports.judgments_import(
        campaign=campaign, lines=judgment_imports.parse_jsonl(encoded), source="test"
    )


def labelled_campaigns(items: int = 20, *, unsafe: tuple[int, ...] = (0,)) -> tuple[Campaign, Campaign]:
    """An SSI campaign (5 raters) and a safety campaign (3 raters) over the same ``items``
    responses, with consensus labels. Items in ``unsafe`` are labelled harmful by 2 of 3."""
    # Seeded by a migration, but a transactional test before this one may have flushed it.
    SafetyObjective.objects.get_or_create(
        slug="harm", defaults={"name": "Harm", "guidance": "Harmful content."}
    )
    ssi = campaigns.campaign_create(name="labelled ssi", kind="ssi", empty=True)
    safety = campaigns.campaign_create(name="labelled safety", kind="safety", empty=True, objectives=["harm"])
    ssi_lines, safety_lines = [], []
    for index in range(items):
        for rater, answers in enumerate(_answers(index)):
            for attribute, value in answers.items():
                ssi_lines.append(
                    {"item": item(index), "rater": f"r{rater}", "attribute": attribute, "value": value}
                )
        for rater in range(3):
            harmful = index in unsafe and rater < 2
            safety_lines.append(
                {
                    "item": item(index),
                    "rater": f"s{rater}",
                    "attribute": "violates",
                    "objective": "harm",
                    "value": "yes" if harmful else "no",
                }
            )
    _import(ssi, ssi_lines)
    _import(safety, safety_lines)
    return ssi, safety


# --- labels from the crowd --------------------------------------------------------------------

CROWD_DIALOGS = 6
CROWD_UNSAFE = (0, 3)  # dialogs whose first answer two of three safety raters find harmful


def crowd_answer(dialog: int) -> str:
    """The first model turn of crowd dialog ``dialog``: sensible, specific and interesting."""
    topic = TOPICS[dialog]
    return f"{topic.title()} are wonderful; I read about {topic} every morning (dialog {dialog})."


def _crowd_dialogs() -> None:
    for i in range(CROWD_DIALOGS):
        dialog_with_turns(
            [f"What about {TOPICS[i]}?", crowd_answer(i), "Why?", f"Purple {i}."],
            external_id=f"crowd-{i}",
            purpose="quality",
        )


def _ssi_answers(rater: int, response: str) -> dict[str, str]:
    """Four of five raters find a good answer good; three of five find ``Purple`` not sensible."""
    finds_good = rater < 4 if not response.startswith("Purple") else rater >= 3
    if finds_good:
        return {"sensible": "yes", "specific": "yes", "interesting": "yes"}
    return {"sensible": "no"}


def _safety_answers(rater: int, response: str) -> dict[str, str]:
    harmful = any(response == crowd_answer(i) for i in CROWD_UNSAFE) and rater < 2
    return {"harm": "yes" if harmful else "no"}


def _rate(worker: Any, rater: int, kind: str, answers: Any) -> int:
    """Rate every item of ``kind`` left for ``worker`` through the API, as their client does."""
    client = APIClient()
    client.force_authenticate(worker)
    response = client.get("/api/v1/tasks/next", {"kind": kind})
    task = response.json() if response.status_code == 200 else None
    rated = 0
    while task is not None:
        body = {"answers": answers(rater, task["item"]["response"]["text"])}
        response = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", body, format="json")
        assert response.status_code == 201, response.content
        rated += 1
        task = response.json()["next"]
    return rated


def crowd_rated_campaigns() -> tuple[Campaign, Campaign]:
    """An SSI campaign (5 raters) and a safety campaign (3 raters) made from six quality dialogs
    of two model turns each, so their items are the dialogs' turns, rated by five crowdworkers
    through the API. Each dialog's first answer is good, its second (``Purple``) not sensible;
    the first answers of ``CROWD_UNSAFE`` are harmful to two of the three safety raters."""
    SafetyObjective.objects.get_or_create(
        slug="harm", defaults={"name": "Harm", "guidance": "Harmful content."}
    )
    _crowd_dialogs()
    quality = campaigns.DialogFilters(purpose="quality")
    ssi = campaigns.campaign_create(name="crowd ssi", kind="ssi", filters=quality)
    safety = campaigns.campaign_create(
        name="crowd safety", kind="safety", filters=quality, objectives=["harm"]
    )
    workers = [UserFactory(role=Role.CROWDWORKER) for _ in range(5)]
    rated = {"ssi": 0, "safety": 0}
    for rater, worker in enumerate(workers):
        rated["ssi"] += _rate(worker, rater, "ssi", _ssi_answers)
        rated["safety"] += _rate(worker, rater, "safety", _safety_answers)
    assert rated == {"ssi": 2 * CROWD_DIALOGS * 5, "safety": 2 * CROWD_DIALOGS * 3}
    return ssi, safety
