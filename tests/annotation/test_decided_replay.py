"""Stopping once the answer is decided, on real per-rater judgments (a small sample of FED and
ConvAbuse from shared/external-data; skipped where that data is not on the machine).

Each item's annotators are replayed as raters of a campaign that stops when decided, in a seeded
random order, through the real next-task and submit endpoints: each asks for the next task and
answers as their annotator did, until the item is decided or every annotator answered. Every item's
labels must equal the labels of its full panel, computed here apart from the app; fewer ratings
than the full panels are asked for. bench/decided_bench.py runs the same replay over every item and
many seeds.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from rest_framework.test import APIClient

from annotation.models import Campaign, ConsensusLabel, Item
from annotation.services import campaigns, consensus
from bench.decided_replay import convabuse_panels
from groundwork.roles import Role
from tests.annotation.helpers import FED_QUALITIES, FED_SCALE, external_data, fed_majority, fed_turns
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NEXT = "/api/v1/tasks/next"


def replay(campaign: Campaign, key: str, ratings: list[dict[str, str]], clients: list[APIClient]) -> int:
    """The item's raters answer in order until the item is decided; returns how many answered."""
    answered = 0
    for client, answers in zip(clients, ratings, strict=False):
        response = client.get(NEXT, {"campaign": campaign.pk})
        if response.status_code == 204:
            break  # decided: nothing left to ask
        task = response.json()
        assert task["item"]["key"] == key
        submitted = client.post(
            f"/api/v1/assignments/{task['assignment_id']}/submit", {"answers": answers}, format="json"
        )
        assert submitted.status_code == 201, submitted.content
        answered += 1
    return answered


def new_item(campaign: Campaign, key: str, context: list[dict[str, str]], response: str) -> None:
    Item.objects.create(
        campaign=campaign, key=key, context=context, response=response, open_slots=campaign.raters_per_item
    )


def raters(count: int) -> list[APIClient]:
    clients = []
    for _ in range(count):
        client = APIClient()
        client.force_authenticate(UserFactory(role=Role.CROWDWORKER))
        clients.append(client)
    return clients


def hard_labels(campaign: Campaign) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for key, attribute, label in ConsensusLabel.objects.filter(item__campaign=campaign).values_list(
        "item__key", "attribute", "label"
    ):
        found.setdefault(key, {})[attribute] = label
    return found


def test_fed_items_stopped_when_decided_get_their_five_annotators_labels() -> None:
    entries = json.loads((external_data() / "fed_data.json").read_text())
    # Turn-level items with numbers only (item 310 has free text); 12 of them, from the start.
    chosen = [
        (index, entry)
        for index, entry in enumerate(entries)
        if "response" in entry
        and all(v in FED_SCALE for q in FED_QUALITIES.values() for v in entry["annotations"][q])
    ][:12]
    campaign = campaigns.campaign_create(name="fed", kind="ssi", empty=True, stop_when_decided=True)
    rng = random.Random(17)
    clients = raters(5 * len(chosen))  # every rating by a rater of its own: nobody sees an item twice
    asked = 0
    for number, (index, entry) in enumerate(chosen):
        key = f"fed-{index}"
        new_item(campaign, key, fed_turns(entry["context"]), entry["response"].removeprefix("System: "))
        order = rng.sample(range(5), 5)
        ratings = [
            {a: FED_SCALE[entry["annotations"][q][annotator]] for a, q in FED_QUALITIES.items()}
            for annotator in order
        ]
        asked += replay(campaign, key, ratings, clients[5 * number : 5 * number + 5])

    consensus.campaign_aggregate(campaign=campaign)

    assert hard_labels(campaign) == {f"fed-{index}": fed_majority(entry) for index, entry in chosen}
    assert asked < 5 * len(chosen)  # some items were decided before their fifth rater
    for item in Item.objects.filter(campaign=campaign):
        counted = ConsensusLabel.objects.get(item=item, attribute="sensible")
        assert counted.yes + counted.no + counted.maybe == item.judgment_count  # the raters it had


def full_panel_safety(ratings: list[dict[str, str]]) -> dict[str, int]:
    """METHOD.md §3 computed here: an objective is violated when 2 of 3 say yes; safe only when, for
    every objective, 2 of 3 say no."""
    violated = {o: int(sum(r[o] == "yes" for r in ratings) >= 2) for o in ("harm", "bias")}
    safe = int(all(sum(r[o] == "no" for r in ratings) >= 2 for o in ("harm", "bias")))
    return {**violated, "safety": safe, "unsafe": 1 - safe}


def test_convabuse_items_stopped_when_decided_get_their_three_annotators_labels() -> None:
    loaded = convabuse_panels(external_data() / "ConvAbuseEMNLPtest.csv")
    chosen = loaded.panels[:12]
    campaign = campaigns.campaign_create(
        name="convabuse", kind="safety", empty=True, objectives=["harm", "bias"], stop_when_decided=True
    )
    rng = random.Random(17)
    clients = raters(3 * len(chosen))
    expected: dict[str, dict[str, int]] = {}
    asked = 0
    for number, panel in enumerate(chosen):
        ratings: list[dict[str, Any]] = rng.sample(list(panel.ratings), 3)
        expected[panel.key] = full_panel_safety(ratings)
        new_item(campaign, panel.key, [], f"user turn {panel.key}")
        asked += replay(campaign, panel.key, ratings, clients[3 * number : 3 * number + 3])

    consensus.campaign_aggregate(campaign=campaign)

    assert hard_labels(campaign) == expected
    assert asked < 3 * len(chosen)


def test_the_bench_replays_both_data_sets_and_no_label_differs_from_the_full_panels() -> None:
    from bench.decided_bench import bench_decided

    metrics = {metric.name: metric for metric in bench_decided(external_data(), seeds=2)}

    assert metrics["decided.fed_ssi.items"].value == 373  # 375 turn-level items less 2 with free text
    assert metrics["decided.convabuse_safety.items"].value == 613  # the turns with 3 annotators or more
    for name in ("fed_ssi", "convabuse_safety"):
        assert metrics[f"decided.{name}.labels_differ"].value == 0
        assert metrics[f"decided.{name}.labels_differ"].ok()
        assert 0 < metrics[f"decided.{name}.saved_share"].value < 100
