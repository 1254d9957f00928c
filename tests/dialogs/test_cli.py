"""``manage.py import_dialogs`` as a person runs it: a separate process, its exit status and
its messages, on the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dialogs.models import Dialog, Turn
from tests.conftest import ROOT, database_url

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url(), "ARTIFACTS_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def line(dialog_id: str, speaker: str = "model") -> str:
    turns = [{"speaker": "user", "text": "Hi"}, {"speaker": speaker, "text": "Hello"}]
    return json.dumps({"id": dialog_id, "purpose": "quality", "turns": turns})


def test_a_bad_line_3_exits_non_zero_names_line_and_field_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dialogs.jsonl"
    path.write_text("\n".join([line("a"), line("b"), line("c", speaker="bot"), line("d")]) + "\n")

    result = manage("import_dialogs", str(path), tmp_path=tmp_path)

    assert result.returncode != 0
    assert f"{path}:3: turns[1].speaker: unknown speaker 'bot'" in result.stderr
    assert "nothing was imported" in result.stderr
    assert (Dialog.objects.count(), Turn.objects.count()) == (0, 0)


def test_a_good_file_is_imported_and_exported_back(tmp_path: Path) -> None:
    path = tmp_path / "dialogs.jsonl"
    path.write_text(line("a") + "\n" + line("b") + "\n")

    imported = manage("import_dialogs", str(path), tmp_path=tmp_path)
    exported = manage("export_dialogs", "-", tmp_path=tmp_path)

    assert imported.returncode == 0, imported.stderr
    assert "2 dialogs imported, 0 already present" in imported.stdout
    assert sorted(json.loads(row)["id"] for row in exported.stdout.splitlines()) == ["a", "b"]
