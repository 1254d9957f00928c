"""The management commands: import_dialogs, export_dialogs, load_demo_dialogs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Count, F

from dialogs.models import Dialog, Turn

pytestmark = pytest.mark.django_db


def dialog(dialog_id: str, *texts: str, purpose: str = "quality") -> dict[str, Any]:
    turns = [{"speaker": "user" if i % 2 == 0 else "model", "text": text} for i, text in enumerate(texts)]
    return {"id": dialog_id, "purpose": purpose, "turns": turns, "meta": {}}


def write_jsonl(path: Path, *objects: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(obj) + "\n" for obj in objects), encoding="utf-8")
    return path


def test_import_dialogs_reports_the_bad_line_and_field_and_writes_nothing(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        dialog("d1", "Hi", "Hello"),
        dialog("d2", "Hey"),
        {"id": "d3", "purpose": "quality", "turns": [{"speaker": "bot", "text": "beep"}]},
    )
    stderr = io.StringIO()

    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_dialogs", str(path), stdout=io.StringIO(), stderr=stderr)

    assert f"{path}:3:" in stderr.getvalue()
    assert "turns[0].speaker" in stderr.getvalue()
    assert Dialog.objects.count() == 0
    assert Turn.objects.count() == 0


def test_import_dialogs_of_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_dialogs", str(tmp_path / "nope.jsonl"))


def test_import_dialogs_prints_how_many_were_imported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "good.jsonl", dialog("d1", "Hi"), dialog("d2", "Hey"), dialog("d3", "Yo"))
    stdout = io.StringIO()

    call_command("import_dialogs", str(path), stdout=stdout)

    assert "3 dialogs imported" in stdout.getvalue()
    assert Dialog.objects.count() == 3

    again = io.StringIO()
    call_command("import_dialogs", str(path), stdout=again)
    assert "0 dialogs imported, 3 already present" in again.getvalue()
    assert Dialog.objects.count() == 3


def test_import_dialogs_source_defaults_to_the_file_name(tmp_path: Path) -> None:
    name = "vendor-batch-2024-06-01-" + "x" * 80 + ".jsonl"  # 110 characters, a legal file name
    path = write_jsonl(tmp_path / name, dialog("d1", "Hi"))

    call_command("import_dialogs", str(path), stdout=io.StringIO())

    assert Dialog.objects.get(external_id="d1").source.startswith("vendor-batch-2024-06-01-")


def test_import_dialogs_source_option(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "good.jsonl", dialog("d1", "Hi"))

    call_command("import_dialogs", str(path), "--source", "vendor-x", stdout=io.StringIO())

    assert Dialog.objects.get(external_id="d1").source == "vendor-x"


def test_export_dialogs_writes_one_json_object_per_line(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", dialog("d1", "Hi", "Hello"), dialog("d2", "Hey", purpose="safety")
    )
    call_command("import_dialogs", str(source), stdout=io.StringIO())
    out = tmp_path / "out.jsonl"
    stdout = io.StringIO()

    call_command("export_dialogs", str(out), stdout=stdout)

    assert "2 dialogs exported" in stdout.getvalue()
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == [
        dialog("d1", "Hi", "Hello"),
        dialog("d2", "Hey", purpose="safety"),
    ]


def test_export_dialogs_purpose_option(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", dialog("d1", "Hi"), dialog("d2", "Hey", purpose="safety"), dialog("d3", "Yo")
    )
    call_command("import_dialogs", str(source), stdout=io.StringIO())
    out = tmp_path / "out.jsonl"

    call_command("export_dialogs", str(out), "--purpose", "safety", stdout=io.StringIO())

    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["d2"]


def test_export_dialogs_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", dialog("d1", "Hi", "Hello"), dialog("d2", "Hey"), dialog("d3", "Yo")
    )
    call_command("import_dialogs", str(source), stdout=io.StringIO())
    capsys.readouterr()

    call_command("export_dialogs", "-")

    output = capsys.readouterr().out
    assert output.endswith("\n")
    lines = output.split("\n")[:-1]
    assert len(lines) == 3
    assert all(line.strip() for line in lines)
    assert [json.loads(line)["id"] for line in lines] == ["d1", "d2", "d3"]


def test_load_demo_dialogs_imports_chatterbot_conversations_once() -> None:
    stdout = io.StringIO()

    call_command("load_demo_dialogs", stdout=stdout)

    dialogs = Dialog.objects.filter(source="chatterbot-corpus")
    total = dialogs.count()
    # The corpus's 2,026 conversations, less its repeats (tech_support.yml holds 10 conversations
    # 105 times each): no two demo dialogs say the same thing.
    assert total == 899
    assert total == Dialog.objects.count()
    texts = Turn.objects.order_by("dialog_id", "index").values_list("dialog_id", "text")
    conversations: dict[int, list[str]] = {}
    for dialog_id, text in texts:
        conversations.setdefault(dialog_id, []).append(text)
    assert len({tuple(turns) for turns in conversations.values()}) == total
    assert f"{total} imported" in stdout.getvalue()
    assert set(dialogs.values_list("purpose", flat=True)) == {"pretrain"}
    assert not dialogs.annotate(turn_count=Count("turns")).filter(turn_count__lt=2).exists()
    # Speakers alternate, the user first: even turns are the user's, odd ones the model's.
    parity = Turn.objects.annotate(parity=F("index") % 2)
    assert parity.filter(parity=0, speaker="user").exists()
    assert parity.filter(parity=1, speaker="model").exists()
    assert not parity.filter(parity=0).exclude(speaker="user").exists()
    assert not parity.filter(parity=1).exclude(speaker="model").exists()
    turns = Turn.objects.count()

    again = io.StringIO()
    call_command("load_demo_dialogs", stdout=again)

    assert "0 imported" in again.getvalue()
    assert f"{total} already present" in again.getvalue()
    assert (Dialog.objects.count(), Turn.objects.count()) == (total, turns)


def test_import_dialogs_reports_a_too_deeply_nested_line_and_writes_nothing(tmp_path: Path) -> None:
    """json.loads hit Python's recursion limit: a RecursionError and a traceback, not a message."""
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(dialog("d1", "Hi")) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    stderr = io.StringIO()

    with pytest.raises(CommandError, match="1 bad line"):
        call_command("import_dialogs", str(path), stdout=io.StringIO(), stderr=stderr)

    assert f"{path}:2: (json): not valid JSON: arrays and objects are nested more than 64 levels deep" in (
        stderr.getvalue()
    )
    assert Dialog.objects.count() == 0


def test_import_dialogs_refuses_an_id_with_a_control_character(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ids.jsonl", dialog("d1", "Hi"), dialog("d\n2", "Hi"))
    stderr = io.StringIO()

    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_dialogs", str(path), stdout=io.StringIO(), stderr=stderr)

    assert f"{path}:2: id: contains a control character (U+000A) at character 2" in stderr.getvalue()
    assert Dialog.objects.count() == 0
