"""``dialogs.services``: importing JSONL files all or nothing, and exporting them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dialogs.models import Dialog, Turn
from dialogs.services import (
    DialogImportError,
    dialogs_export_file,
    dialogs_import,
    dialogs_import_file,
    parse_objects,
    turn_add,
)
from tests.factories import RoleFactory

pytestmark = pytest.mark.django_db


def dialog(dialog_id: str, *texts: str, purpose: str = "quality", **extra: Any) -> dict[str, Any]:
    """A dialog object whose turns alternate user, model, ..."""
    turns = [{"speaker": "user" if i % 2 == 0 else "model", "text": text} for i, text in enumerate(texts)]
    return {"id": dialog_id, "purpose": purpose, "turns": turns, "meta": {}, **extra}


def write_jsonl(path: Path, *lines: dict[str, Any] | str) -> Path:
    """Write each dialog object as one JSON line; strings are written as they are."""
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


def counts() -> tuple[int, int]:
    return Dialog.objects.count(), Turn.objects.count()


def stored_turns(dialog_id: str) -> list[tuple[int, str, str]]:
    return list(
        Turn.objects.filter(dialog__external_id=dialog_id)
        .order_by("index")
        .values_list("index", "speaker", "text")
    )


def import_error(path: Path) -> DialogImportError:
    with pytest.raises(DialogImportError) as caught:
        dialogs_import_file(path=path)
    return caught.value


def fields_by_line(error: DialogImportError) -> list[tuple[int, str]]:
    return [(e.line, e.field) for e in error.errors]


# --- import ---------------------------------------------------------------------------------


def test_import_creates_dialogs_and_their_turns_in_order(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "batch-1.jsonl",
        dialog("d1", "Hi", "Hello! How can I help?", "Tell me a joke.", purpose="quality"),
        dialog("d2", "Is it safe?", purpose="safety", mode="sensitive", model_version="m-3"),
    )

    result = dialogs_import_file(path=path)

    assert (result.created, result.unchanged, result.ids) == (2, 0, ["d1", "d2"])
    assert counts() == (2, 4)
    assert stored_turns("d1") == [
        (0, "user", "Hi"),
        (1, "model", "Hello! How can I help?"),
        (2, "user", "Tell me a joke."),
    ]
    d2 = Dialog.objects.get(external_id="d2")
    assert (d2.purpose, d2.mode) == ("safety", "sensitive")
    assert stored_turns("d2") == [(0, "user", "Is it safe?")]


def test_import_credits_each_model_turn_to_its_model_version_and_export_writes_it_per_turn(
    tmp_path: Path,
) -> None:
    record = dialog(
        "d1", "Hi", "Hello", "Tea?", "Yes", "Rude?", "Let us talk about tea.", model_version="m-1"
    )
    record["turns"][3]["model_version"] = "m-2"
    record["turns"][5]["fallback"] = "unsafe"
    source = write_jsonl(tmp_path / "in.jsonl", record)

    dialogs_import_file(path=source)

    turns = Turn.objects.filter(dialog__external_id="d1").order_by("index")
    assert [(t.speaker, t.model_version, t.fallback) for t in turns] == [
        ("user", "", ""),
        ("model", "m-1", ""),  # the dialog's model version is the default of its model turns
        ("user", "", ""),
        ("model", "m-2", ""),
        ("user", "", ""),
        ("model", "m-1", "unsafe"),
    ]
    out = tmp_path / "out.jsonl"
    dialogs_export_file(path=out)
    exported = json.loads(out.read_text())
    assert "model_version" not in exported
    assert [t.get("model_version") for t in exported["turns"]] == [None, "m-1", None, "m-2", None, "m-1"]
    # The file as it came and the file as exported are the same dialog: neither changes anything.
    assert dialogs_import_file(path=source).unchanged == 1
    assert dialogs_import_file(path=out).unchanged == 1


def test_turn_add_credits_model_turns_only() -> None:
    chat = Dialog.objects.create(external_id="chat-1", purpose="quality")

    with pytest.raises(ValueError, match="only a model turn has a model version"):
        turn_add(dialog=chat, speaker="user", text="Hi", model_version="gw-1")
    turn_add(dialog=chat, speaker="user", text="Hi")
    first = turn_add(dialog=chat, speaker="model", text="Hello", model_version="gw-1")
    turn_add(dialog=chat, speaker="user", text="Tea?")
    second = turn_add(dialog=chat, speaker="model", text="Yes", model_version="gw-2")

    first.refresh_from_db()
    assert (first.model_version, second.model_version) == ("gw-1", "gw-2")


def test_import_records_the_source(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "batch-1.jsonl", dialog("d1", "Hi"))
    other = write_jsonl(tmp_path / "other.jsonl", dialog("d2", "Hi"))

    dialogs_import_file(path=path)
    dialogs_import_file(path=other, source="vendor-x")

    assert Dialog.objects.get(external_id="d1").source == "batch-1.jsonl"
    assert Dialog.objects.get(external_id="d2").source == "vendor-x"


def test_reimporting_the_same_file_adds_nothing(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        dialog("d1", "Hi", "Hello"),
        dialog("d2", "Yo", purpose="pretrain", meta={"k": [1, {"x": None}]}),
        dialog("d3", "Hey", "Hey there", "Bye"),
    )
    dialogs_import_file(path=path)
    before = counts()

    result = dialogs_import_file(path=path)

    assert (result.created, result.unchanged, result.ids) == (0, 3, [])
    assert counts() == before == (3, 6)


def test_a_changed_dialog_under_an_existing_id_is_refused(tmp_path: Path) -> None:
    dialogs_import_file(path=write_jsonl(tmp_path / "a.jsonl", dialog("d1", "Hi", "Hello")))
    path = write_jsonl(
        tmp_path / "b.jsonl",
        dialog("new-1", "Fine"),
        dialog("d1", "Hi", "Hello, edited"),
    )

    error = import_error(path)

    assert fields_by_line(error) == [(2, "id")]
    assert "already exists" in error.errors[0].message
    assert counts() == (1, 2)
    assert stored_turns("d1") == [(0, "user", "Hi"), (1, "model", "Hello")]
    assert not Dialog.objects.filter(external_id="new-1").exists()


def test_a_bad_third_line_writes_nothing_even_when_the_first_two_are_good(tmp_path: Path) -> None:
    dialogs_import_file(path=write_jsonl(tmp_path / "seed.jsonl", dialog("seed", "Hi")))
    before = counts()
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        dialog("good-1", "Hi", "Hello"),
        dialog("good-2", "Hey"),
        {"id": "bad", "purpose": "quality", "turns": [{"speaker": "bot", "text": "beep"}]},
        dialog("good-4", "Bye"),
    )

    error = import_error(path)

    assert fields_by_line(error) == [(3, "turns[0].speaker")]
    assert "line 3" in str(error)
    assert counts() == before
    assert not Dialog.objects.filter(external_id__startswith="good-").exists()


def test_every_bad_line_is_reported_in_line_order(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        dialog("d1", "Hi"),
        "{not json",
        dialog("d3", "Hi", purpose="chitchat"),
        dialog("d4", "Hi", role="no-such-role"),
    )

    error = import_error(path)

    assert fields_by_line(error) == [(2, "(json)"), (3, "purpose"), (4, "role")]
    assert counts() == (0, 0)


def test_a_duplicate_id_in_one_file_is_reported_on_the_second_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "dup.jsonl",
        dialog("d1", "Hi"),
        dialog("d2", "Hey"),
        dialog("d1", "Hi"),
    )

    error = import_error(path)

    assert fields_by_line(error) == [(3, "id")]
    assert "line 1" in error.errors[0].message
    assert counts() == (0, 0)


def test_an_unknown_role_slug_is_refused(tmp_path: Path) -> None:
    RoleFactory(slug="chef")
    path = write_jsonl(
        tmp_path / "r.jsonl", dialog("d1", "Hi", role="chef"), dialog("d2", "Hi", role="pilot")
    )

    error = import_error(path)

    assert fields_by_line(error) == [(2, "role")]
    assert "pilot" in error.errors[0].message
    assert counts() == (0, 0)


def test_an_existing_role_slug_links_the_dialog_to_the_role(tmp_path: Path) -> None:
    chef = RoleFactory(slug="chef")
    path = write_jsonl(tmp_path / "r.jsonl", dialog("d1", "What's for dinner?", purpose="role", role="chef"))

    dialogs_import_file(path=path)

    assert Dialog.objects.get(external_id="d1").role == chef
    # The role is part of the content: re-importing the file changes nothing.
    assert dialogs_import_file(path=path).unchanged == 1


def test_blank_lines_are_skipped_but_still_counted(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "blank.jsonl",
        dialog("d1", "Hi"),
        "",
        "   ",
        dialog("d4", "Hey"),
        "",
        dialog("d6", "Hi", purpose="unknown"),
    )

    error = import_error(path)

    assert fields_by_line(error) == [(6, "purpose")]

    good = write_jsonl(tmp_path / "blank-ok.jsonl", dialog("d1", "Hi"), "", dialog("d3", "Hey"), "")
    assert dialogs_import_file(path=good).created == 2
    assert counts() == (2, 2)


def test_parse_objects_positions_count_from_one() -> None:
    with pytest.raises(DialogImportError) as caught:
        dialogs_import(records=parse_objects([dialog("a", "Hi"), "not an object"]), source="api")

    assert fields_by_line(caught.value) == [(2, "(json)")]


def test_a_model_version_too_long_for_the_database_is_a_line_error(tmp_path: Path) -> None:
    # The file format puts no limit on model_version, but the column holds 100 characters: the
    # import must still answer with the line and field, not crash half-way.
    path = write_jsonl(tmp_path / "mv.jsonl", dialog("d1", "Hi"), dialog("d2", "Hi", model_version="m" * 101))

    error = import_error(path)

    assert fields_by_line(error) == [(2, "model_version")]
    assert counts() == (0, 0)


def test_a_nan_in_meta_is_a_line_error(tmp_path: Path) -> None:
    # Python's json module reads NaN, but it is not JSON and PostgreSQL's jsonb refuses it.
    path = tmp_path / "nan.jsonl"
    path.write_text(
        json.dumps(dialog("d1", "Hi"))
        + "\n"
        + json.dumps(dialog("d2", "Hi", meta={"score": float("nan")}))
        + "\n"
    )

    error = import_error(path)

    assert fields_by_line(error) == [(2, "(json)")]
    assert "NaN is not a JSON number" in error.errors[0].message
    assert counts() == (0, 0)


def test_a_nul_character_in_a_turn_is_a_line_error(tmp_path: Path) -> None:
    # Valid JSON, but PostgreSQL text cannot hold NUL: the user must learn which line and field.
    path = write_jsonl(tmp_path / "nul.jsonl", dialog("d1", "Hi"), dialog("d2", "Hi", "bad\u0000text"))

    error = import_error(path)

    assert fields_by_line(error) == [(2, "turns[1].text")]
    assert counts() == (0, 0)


# --- export ---------------------------------------------------------------------------------


def test_export_reimports_into_an_empty_database_identically(tmp_path: Path) -> None:
    RoleFactory(slug="chef")
    source = write_jsonl(
        tmp_path / "source.jsonl",
        dialog("q:1", "Hi", "Hello", purpose="quality"),
        dialog("s/2", "Is it safe?", "Yes.", purpose="safety", mode="adversarial", model_version="m-1"),
        dialog("r 3", "Soup?", purpose="role", role="chef", meta={"rating": 4.5, "tags": ["a", "ü"]}),
        dialog("u:4", 'Grüß Gott ☃ \u2028 "quoted" \\ <b>', "line\nbreak\ttab", purpose="pretrain"),
    )
    dialogs_import_file(path=source)
    first = tmp_path / "first.jsonl"
    second = tmp_path / "second.jsonl"

    assert dialogs_export_file(path=first) == 4
    Dialog.objects.all().delete()
    assert counts() == (0, 0)
    assert dialogs_import_file(path=first).created == 4
    assert dialogs_export_file(path=second) == 4

    assert second.read_bytes() == first.read_bytes()
    # JSONL lines end at "\n" only (str.splitlines would also split at the U+2028 in a text).
    lines = first.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    assert [json.loads(line)["id"] for line in lines[:-1]] == [
        "q:1",
        "s/2",
        "r 3",
        "u:4",
    ]
    assert stored_turns("u:4") == [
        (0, "user", 'Grüß Gott ☃ \u2028 "quoted" \\ <b>'),
        (1, "model", "line\nbreak\ttab"),
    ]
    assert Dialog.objects.get(external_id="r 3").role.slug == "chef"


def test_export_writes_one_json_object_per_line(tmp_path: Path) -> None:
    dialogs_import_file(
        path=write_jsonl(tmp_path / "in.jsonl", dialog("d1", "Hi", "Hello"), dialog("d2", "x"))
    )
    out = tmp_path / "nested" / "out.jsonl"

    dialogs_export_file(path=out)

    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""  # the file ends with a newline, and has no blank line
    assert [json.loads(line) for line in lines[:-1]] == [dialog("d1", "Hi", "Hello"), dialog("d2", "x")]
    assert not list(out.parent.glob("*.partial"))


def test_export_filters_by_purpose(tmp_path: Path) -> None:
    dialogs_import_file(
        path=write_jsonl(
            tmp_path / "in.jsonl",
            dialog("q1", "Hi", purpose="quality"),
            dialog("s1", "Hi", purpose="safety"),
            dialog("q2", "Hey", purpose="quality"),
        )
    )
    out = tmp_path / "quality.jsonl"

    assert dialogs_export_file(path=out, purpose="quality") == 2

    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(d["id"], d["purpose"]) for d in exported] == [("q1", "quality"), ("q2", "quality")]


def test_export_of_no_dialogs_is_an_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "empty.jsonl"

    assert dialogs_export_file(path=out, purpose="safety") == 0
    assert out.read_bytes() == b""
