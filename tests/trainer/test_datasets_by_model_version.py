"""Datasets made from dialogs take the turns a model version wrote, each turn credited to its own
writer (``Turn.model_version``), not every model turn of the dialogs a version answered in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dialogs.services import dialogs_import, parse_objects
from tests.trainer.helpers import labelled_campaigns, tiny_model
from trainer import records
from trainer.services import dataset_builds, requests

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Path) -> None:
    settings.ARTIFACTS_DIR = tmp_path


def two_versions_chat() -> None:
    """One dialog that gw-a answered first and gw-b later."""
    turns = [
        {"speaker": "user", "text": "Hi there."},
        {"speaker": "model", "text": "Hello from a.", "model_version": "gw-a"},
        {"speaker": "user", "text": "Tell me about tea."},
        {"speaker": "model", "text": "Tea from a.", "model_version": "gw-a"},
        {"speaker": "user", "text": "And coffee?"},
        {"speaker": "model", "text": "Coffee from b.", "model_version": "gw-b"},
    ]
    dialogs_import(
        records=parse_objects([{"id": "chat-ab", "purpose": "quality", "turns": turns}]), source="t"
    )


def test_a_pretrain_dataset_of_one_model_version_holds_only_the_turns_it_wrote() -> None:
    tokenizer_of = tiny_model()
    two_versions_chat()

    request = requests.dataset_request(
        kind="pretrain", tokenizer_source=tokenizer_of, model_versions=["gw-a"], enqueue=False
    )
    dataset = dataset_builds.dataset_build(dataset_id=request.pk)

    assert dataset.status == "ready", dataset.error
    assert dataset.filters["model_versions"] == ["gw-a"]
    rows = [row for split in records.SPLITS for row in records.read_rows(dataset.path, split)]
    assert sorted(row["response"] for row in rows) == ["Hello from a.", "Tea from a."]
    tea = next(row for row in rows if row["response"] == "Tea from a.")
    assert [turn["text"] for turn in tea["context"]] == ["Hi there.", "Hello from a.", "Tell me about tea."]
    assert dataset.total == 1  # the one dialog with a turn of gw-a (no pretrain dialog has one)


def test_a_dataset_from_campaigns_is_filtered_by_its_campaigns_not_by_model_version() -> None:
    tiny_model()
    ssi, _ = labelled_campaigns(items=2)

    with pytest.raises(requests.TrainerError, match="filter the campaigns by model version") as refused:
        requests.dataset_request(
            kind="quality_safety", campaigns=[ssi], model_versions=["gw-a"], enqueue=False
        )
    assert refused.value.field == "model_versions"
