"""Held out of training (issue 15): no dataset trains on an evaluation — neither on the dialogs an
evaluation set's contexts were cut from, nor on the dialogs of evaluation answers — and every build
counts what it left out in its manifest (``skipped``); ``make run``'s demo set is cut from demo
dialogs that are held out this way."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from dialogs import demo
from dialogs.evaluation_responses import evaluation_response_add
from dialogs.evaluation_sets import evaluation_set_from_dialogs
from dialogs.models import Dialog, EvaluationSet
from tests.factories import dialog_with_turns
from tests.trainer.helpers import crowd_rated_campaigns, tiny_model
from trainer import records, sources
from trainer.models import DatasetVersion
from trainer.services import dataset_builds, requests

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Path) -> None:
    settings.ARTIFACTS_DIR = tmp_path


def export(kind: str, **kwargs: Any) -> DatasetVersion:
    dataset = requests.dataset_request(kind=kind, enqueue=False, **kwargs)
    return dataset_builds.dataset_build(dataset_id=dataset.pk)


def exported_dialogs(dataset: DatasetVersion) -> set[str]:
    return {row["dialog"] for split in records.SPLITS for row in records.read_rows(dataset.path, split)}


def manifest(dataset: DatasetVersion) -> dict[str, Any]:
    return json.loads((dataset.path / "manifest.json").read_text())


def test_a_pretrain_dataset_leaves_out_evaluation_dialogs_and_counts_them() -> None:
    for i in range(4):
        dialog_with_turns([f"Hello {i}", f"Hi there {i}", "How are you?", "Fine."], external_id=f"keep-{i}")
    cut = dialog_with_turns(["Do you like tea?", "I love green tea."], external_id="cut-0")
    chosen = evaluation_set_from_dialogs(name="held", dialogs=[cut]).evaluation_set
    answer = evaluation_response_add(context=chosen.contexts.get(), responder="v1", text="Tea is fine.")

    dataset = export("pretrain", vocab_size=400, validation_percent=0)

    assert dataset.status == "ready", dataset.error
    assert exported_dialogs(dataset) == {f"dialog:keep-{i}" for i in range(4)}
    assert manifest(dataset)["skipped"][sources.HELD_OUT] == 2
    assert dataset.counts["skipped"][sources.HELD_OUT] == 2
    # The answer's dialog has turns written by v1: still not training data for v1's successors.
    assert answer.turn.dialog.source == "evaluation"
    assert not sources.pretrain_dialogs(model_versions=["v1"]).exists()
    assert sources.pretrain_held_out(model_versions=["v1"]) == 1
    # The tokenizer was trained without them too.
    assert "green tea" not in " ".join(sources.pretrain_texts())


def test_a_quality_safety_dataset_leaves_out_the_items_of_evaluation_dialogs_and_counts_them() -> None:
    tiny_model()
    ssi, safety = crowd_rated_campaigns()  # dialogs crowd-0 … crowd-5, two model turns each
    evaluation_set_from_dialogs(
        name="held", dialogs=list(Dialog.objects.filter(external_id__in=["crowd-1", "crowd-2"]))
    )

    dataset = export("quality_safety", campaigns=[ssi, safety])

    assert dataset.status == "ready", dataset.error
    kept = exported_dialogs(dataset)
    assert kept == {f"dialog:crowd-{i}" for i in (0, 3, 4, 5)}
    # Two model turns of two dialogs, in the SSI and in the safety campaign.
    assert manifest(dataset)["skipped"][sources.HELD_OUT] == 2 * 2 * 2


def test_the_demo_set_is_cut_from_demo_dialogs_that_training_then_leaves_out() -> None:
    call_command("load_demo_dialogs", stdout=io.StringIO())
    out = io.StringIO()

    call_command("load_demo_evaluation_set", stdout=out)
    call_command("load_demo_evaluation_set", stdout=out)

    demo_set = EvaluationSet.objects.get(name=demo.EVALUATION_SET)  # one version: the same both times
    assert demo.EVALUATION_CONTEXTS <= demo_set.context_count < demo.EVALUATION_CONTEXTS + 20
    assert "made" in out.getvalue()
    assert "already present" in out.getvalue()
    held = set(demo_set.contexts.values_list("source_dialog__external_id", flat=True))
    assert all(external_id.startswith(demo.SOURCE) for external_id in held)
    total = Dialog.objects.filter(source=demo.SOURCE).count()
    training = set(sources.pretrain_dialogs().values_list("external_id", flat=True))
    assert len(training) == total - len(held)
    assert not held & training
