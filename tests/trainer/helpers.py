"""Builders shared by the trainer tests: labelled campaigns (through the judgment import, as an
outside rater pool would deliver them) and a tiny first model (through the services, in the
foreground)."""

from __future__ import annotations

import json
from typing import Any

from annotation import interchange
from annotation import services as annotation_services
from annotation.models import Campaign, SafetyObjective
from tests.factories import dialog_with_turns
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
    interchange.judgments_import(campaign=campaign, lines=interchange.parse_jsonl(encoded), source="test")


def labelled_campaigns(items: int = 20, *, unsafe: tuple[int, ...] = (0,)) -> tuple[Campaign, Campaign]:
    """An SSI campaign (5 raters) and a safety campaign (3 raters) over the same ``items``
    responses, with consensus labels. Items in ``unsafe`` are labelled harmful by 2 of 3."""
    # Seeded by a migration, but a transactional test before this one may have flushed it.
    SafetyObjective.objects.get_or_create(
        slug="harm", defaults={"name": "Harm", "guidance": "Harmful content."}
    )
    ssi = annotation_services.campaign_create(name="labelled ssi", kind="ssi", empty=True)
    safety = annotation_services.campaign_create(
        name="labelled safety", kind="safety", empty=True, objectives=["harm"]
    )
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
