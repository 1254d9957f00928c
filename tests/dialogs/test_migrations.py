"""The data migration that credits model turns written before turns had a model version
(``dialogs/migrations/0006_fill_turn_model_versions.py``), run for real: the database is taken
back to the migration before it, given dialogs as they were stored then, and migrated forward."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("dialogs", "0005_turn_model_version_and_fallback")]
AFTER = [("dialogs", "0006_fill_turn_model_versions")]


@pytest.fixture
def migrate(transactional_db: None) -> Iterator[Any]:
    """``migrate(targets)`` -> the historical apps at ``targets``; the latest schema again after."""

    def to(targets: list[tuple[str, str]]) -> Any:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(targets)
        return executor.loader.project_state(targets).apps

    yield to
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_existing_model_turns_are_credited_to_their_dialogs_model_version(migrate: Any) -> None:
    old = migrate(BEFORE)
    Dialog, Turn = old.get_model("dialogs", "Dialog"), old.get_model("dialogs", "Turn")
    chat = Dialog.objects.create(external_id="chat-1", purpose="quality", model_version="gw-2")
    for index, (speaker, text) in enumerate(
        [("user", "Hi"), ("model", "Hello"), ("user", "Tea?"), ("model", "Yes")]
    ):
        Turn.objects.create(dialog=chat, index=index, speaker=speaker, text=text)
    human = Dialog.objects.create(external_id="imported-1", purpose="pretrain")
    Turn.objects.create(dialog=human, index=0, speaker="user", text="Hi")
    Turn.objects.create(dialog=human, index=1, speaker="model", text="Hello")

    new = migrate(AFTER)

    turns = new.get_model("dialogs", "Turn").objects.order_by("dialog__external_id", "index")
    assert [(t.dialog.external_id, t.speaker, t.model_version) for t in turns] == [
        ("chat-1", "user", ""),
        ("chat-1", "model", "gw-2"),  # the dialog's version is the best information there is
        ("chat-1", "user", ""),
        ("chat-1", "model", "gw-2"),
        ("imported-1", "user", ""),
        ("imported-1", "model", ""),  # no model version was known: none is made up
    ]


def test_migrating_back_gives_the_dialog_the_latest_model_version_again(migrate: Any) -> None:
    new = migrate([("dialogs", "0007_remove_dialog_model_version")])
    chat = new.get_model("dialogs", "Dialog").objects.create(external_id="chat-2", purpose="quality")
    NewTurn = new.get_model("dialogs", "Turn")
    NewTurn.objects.create(dialog=chat, index=0, speaker="user", text="Hi")
    NewTurn.objects.create(dialog=chat, index=1, speaker="model", text="Hello", model_version="gw-1")
    NewTurn.objects.create(dialog=chat, index=2, speaker="user", text="Tea?")
    NewTurn.objects.create(dialog=chat, index=3, speaker="model", text="Yes", model_version="gw-2")

    old = migrate(BEFORE)

    assert old.get_model("dialogs", "Dialog").objects.get(external_id="chat-2").model_version == "gw-2"
