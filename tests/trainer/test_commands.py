"""``manage.py train_first_model``: its numbers are bounded like any training job's, and refused
before any work (no dataset exported, no tokenizer trained)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.factories import dialog_with_turns
from trainer.models import DatasetVersion, TrainingJob
from trainer.services import dataset_builds

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--steps", "2000000"], "hyperparameter steps: must be between 1 and 1000000, got 2000000"),
        (["--d-model", "100000"], "hyperparameter model.d_model: must be between 8 and 4096, got 100000"),
        (["--n-layer", "0"], "hyperparameter model.n_layer: must be between 1 and 64, got 0"),
        (["--vocab-size", "10000000"], "vocab_size must be between 300 and 65536, got 10000000"),
        (["--documents", "-1"], "documents must be a number of documents between 0 and 10000000, or null"),
    ],
)
def test_options_out_of_bounds_are_refused_before_any_work(
    options: list[str], message: str, settings: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    dialog_with_turns(["Hello there", "Hi, how are you?"], purpose="pretrain")

    def no_work(**kwargs: Any) -> Any:  # else a refused size would only show after the export
        raise AssertionError("the dataset was built before the options were checked")

    monkeypatch.setattr(dataset_builds, "dataset_build", no_work)

    with pytest.raises(CommandError, match=message):
        call_command("train_first_model", *options, stdout=io.StringIO())

    assert not DatasetVersion.objects.exists()
    assert not TrainingJob.objects.exists()
