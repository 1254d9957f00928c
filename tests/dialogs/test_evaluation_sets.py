"""Evaluation sets: the JSONL format, the import command and services, versions, locking, and
sets made from dialogs (``dialogs.evaluation_records``, ``dialogs.evaluation_sets``)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from dialogs.evaluation_records import content_sha256, parse_line
from dialogs.evaluation_sets import (
    EvaluationSetError,
    EvaluationSetImportError,
    EvaluationSetLocked,
    evaluation_set_delete,
    evaluation_set_from_dialogs,
    evaluation_set_import,
    evaluation_set_import_file,
    evaluation_set_lock,
    parse_objects,
)
from dialogs.models import Dialog, EvaluationContext, EvaluationSet
from groundwork.jsonl import RecordError
from tests.factories import DialogFactory, RoleFactory, TurnFactory, dialog_with_turns


def context(context_id: str, *texts: str, purpose: str = "quality", **extra: Any) -> dict[str, Any]:
    """A context whose turns alternate user, model, ... with these texts."""
    turns = [{"speaker": "user" if i % 2 == 0 else "model", "text": text} for i, text in enumerate(texts)]
    return {"id": context_id, "context": turns, "purpose": purpose, **extra}


def write_jsonl(path: Path, *objects: dict[str, Any] | str) -> Path:
    lines = (obj if isinstance(obj, str) else json.dumps(obj) for obj in objects)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def import_command(path: Path, *args: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("import_evaluation_set", str(path), *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


# --- the format ---------------------------------------------------------------------------------


def test_a_line_with_every_key_parses() -> None:
    raw = json.dumps(
        context("c1", "Be a mountain.", "I am Everest.", "How tall?", purpose="role", role="everest")
        | {"reference": "8,849 metres."}
    )

    record = parse_line(raw, 4)

    assert (record.id, record.purpose, record.role, record.reference, record.line) == (
        "c1",
        "role",
        "everest",
        "8,849 metres.",
        4,
    )
    assert [(t.speaker, t.text) for t in record.context] == [
        ("user", "Be a mountain."),
        ("model", "I am Everest."),
        ("user", "How tall?"),
    ]
    assert parse_line(json.dumps(record.to_json()), 4) == record


@pytest.mark.parametrize(
    ("obj", "field", "message"),
    [
        ({"id": "c", "purpose": "quality"}, "context", "missing"),
        ({"id": "c", "context": "Hi", "purpose": "quality"}, "context", "expected a list"),
        ({"id": "c", "context": [], "purpose": "quality"}, "context", "at least one turn"),
        (context("c", "Hi") | {"purpose": "chitchat"}, "purpose", "unknown value 'chitchat'"),
        (context("c", "Hi") | {"purpose": "pretrain"}, "purpose", "expected one of quality"),
        ({"id": "c", "context": [{"speaker": "user", "text": "Hi"}]}, "purpose", "missing"),
        (context("c", "Hi", purpose="role"), "role", "missing"),
        (
            {"id": "c", "context": [{"speaker": "bot", "text": "Hi"}], "purpose": "quality"},
            "context[0].speaker",
            "unknown speaker 'bot'",
        ),
        (context("c", "Hi", ""), "context[1].text", "empty"),
        (context("", "Hi"), "id", "empty"),
        (context("c" * 251, "Hi"), "id", "over 250"),
        (context("c", "Hi") | {"reference": 3}, "reference", "expected a string"),
        (context("c", "Hi") | {"turns": []}, "turns", "unknown field"),
    ],
)
def test_a_bad_line_names_its_field(obj: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(RecordError) as refused:
        parse_line(json.dumps(obj), 7)

    assert (refused.value.line, refused.value.field) == (7, field)
    assert message in refused.value.message


def test_the_digest_is_of_the_contents_in_order() -> None:
    a, b = parse_line(json.dumps(context("a", "Hi")), 1), parse_line(json.dumps(context("b", "Yo")), 2)
    a_elsewhere = parse_line(json.dumps(context("a", "Hi")), 9)

    assert content_sha256([a, b]) == content_sha256([a_elsewhere, b])
    assert content_sha256([a, b]) != content_sha256([b, a])


# --- importing ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_importing_a_file_makes_a_set_with_its_contexts_in_order(tmp_path: Path) -> None:
    RoleFactory(slug="everest")
    path = write_jsonl(
        tmp_path / "mtb.jsonl",
        context("q-2", "Do you like jazz?"),
        context("s-1", "Tell me how to pick a lock.", purpose="safety"),
        context("r-1", "Hi!", purpose="role", role="everest", reference="Hello, I am Mount Everest."),
    )

    stdout, _ = import_command(path, "--description", "A first try.")

    evaluation_set = EvaluationSet.objects.get()
    assert (evaluation_set.name, evaluation_set.version, evaluation_set.context_count) == ("mtb", 1, 3)
    assert (evaluation_set.description, evaluation_set.source) == ("A first try.", "mtb.jsonl")
    assert evaluation_set.locked_at is None
    assert f"{path}: 3 contexts imported as mtb v1" in stdout
    contexts = list(evaluation_set.contexts.order_by("index"))
    assert [(c.index, c.external_id, c.purpose) for c in contexts] == [
        (0, "q-2", "quality"),
        (1, "s-1", "safety"),
        (2, "r-1", "role"),
    ]
    assert contexts[0].turns == [{"speaker": "user", "text": "Do you like jazz?"}]
    assert (contexts[2].role.slug, contexts[2].reference) == ("everest", "Hello, I am Mount Everest.")
    assert contexts[0].role is None
    assert contexts[0].reference == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad", "line", "field"),
    [
        ({"id": "c3", "purpose": "quality"}, 3, "context"),
        (context("c3", "Hi", purpose="chitchat"), 3, "purpose"),
        (context("c3", "Hi", purpose="role", role="nobody"), 3, "role"),
        (context("c1", "Hi again"), 3, "id"),
    ],
    ids=["missing context", "bad purpose", "unknown role", "duplicate id"],
)
def test_a_bad_line_refuses_the_file_naming_line_and_field(
    tmp_path: Path, bad: dict[str, Any], line: int, field: str
) -> None:
    path = write_jsonl(tmp_path / "set.jsonl", context("c1", "Hi"), context("c2", "Hey"), bad)
    stderr = io.StringIO()

    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_evaluation_set", str(path), stdout=io.StringIO(), stderr=stderr)

    assert f"{path}:{line}: {field}: " in stderr.getvalue()
    assert EvaluationSet.objects.count() == 0
    assert EvaluationContext.objects.count() == 0


@pytest.mark.django_db
def test_every_bad_line_is_reported_at_once(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "set.jsonl",
        context("c1", "Hi", purpose="chitchat"),
        "{not json",
        context("c3", "Hi", purpose="role", role="nobody"),
    )

    with pytest.raises(EvaluationSetImportError) as refused:
        evaluation_set_import_file(path=path)

    assert [(e.line, e.field) for e in refused.value.errors] == [(1, "purpose"), (2, "(json)"), (3, "role")]


@pytest.mark.django_db
def test_an_empty_file_or_a_bad_name_is_refused(tmp_path: Path) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl")

    with pytest.raises(EvaluationSetImportError, match="no contexts"):
        evaluation_set_import_file(path=empty)
    with pytest.raises(EvaluationSetError, match="name"):
        evaluation_set_import(name="  ", records=parse_objects([context("c1", "Hi")]))
    with pytest.raises(CommandError, match="name: contains a control character"):
        import_command(write_jsonl(tmp_path / "a.jsonl", context("c1", "Hi")), "--name", "two\nlines")
    assert EvaluationSet.objects.count() == 0


@pytest.mark.django_db
def test_importing_the_same_name_again_makes_the_next_version(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "v1.jsonl", context("c1", "Hi"), context("c2", "Hey"))
    changed = write_jsonl(tmp_path / "v2.jsonl", context("c1", "Hi"), context("c2", "Hey there"))
    import_command(first, "--name", "mtb")

    stdout, _ = import_command(changed, "--name", "mtb")

    v1, v2 = EvaluationSet.objects.order_by("version")
    assert [(s.name, s.version) for s in (v1, v2)] == [("mtb", 1), ("mtb", 2)]
    assert "2 contexts imported as mtb v2" in stdout
    assert v1.contexts.get(external_id="c2").turns[0]["text"] == "Hey"  # the old version is untouched
    assert v2.contexts.get(external_id="c2").turns[0]["text"] == "Hey there"
    assert v1.sha256 != v2.sha256


@pytest.mark.django_db
def test_importing_the_latest_versions_contexts_again_makes_no_version(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mtb.jsonl", context("c1", "Hi"), context("c2", "Hey"))
    import_command(path)

    stdout, _ = import_command(path)
    again = evaluation_set_import_file(path=path)

    assert EvaluationSet.objects.count() == 1
    assert "the same 2 contexts as mtb v1; no new version made" in stdout
    assert (again.created, again.evaluation_set.version) == (False, 1)


# --- locking ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_locked_set_refuses_to_be_deleted_with_409_and_an_unlocked_one_goes() -> None:
    kept = evaluation_set_import(name="kept", records=parse_objects([context("c1", "Hi")])).evaluation_set
    wrong = evaluation_set_import(name="wrong", records=parse_objects([context("c1", "Hi")])).evaluation_set

    locked = evaluation_set_lock(evaluation_set=kept)
    with pytest.raises(EvaluationSetLocked, match="is locked") as refused:
        evaluation_set_delete(evaluation_set=kept)
    evaluation_set_delete(evaluation_set=wrong)

    assert refused.value.status == 409
    assert locked.locked_at is not None
    assert list(EvaluationSet.objects.values_list("name", flat=True)) == ["kept"]
    assert EvaluationContext.objects.filter(evaluation_set=kept).count() == 1
    assert not EvaluationContext.objects.filter(evaluation_set_id=wrong.pk).exists()


@pytest.mark.django_db
def test_locking_twice_keeps_the_first_time() -> None:
    evaluation_set = evaluation_set_import(
        name="s", records=parse_objects([context("c1", "Hi")])
    ).evaluation_set
    first = evaluation_set_lock(evaluation_set=evaluation_set).locked_at

    again = evaluation_set_lock(evaluation_set=evaluation_set)

    assert again.locked_at == first


@pytest.mark.django_db
def test_a_locked_set_still_gets_a_next_version(tmp_path: Path) -> None:
    first = evaluation_set_import(name="mtb", records=parse_objects([context("c1", "Hi")])).evaluation_set
    evaluation_set_lock(evaluation_set=first)

    second = evaluation_set_import(name="mtb", records=parse_objects([context("c1", "Hello")]))

    assert (second.created, second.evaluation_set.version, second.evaluation_set.locked_at) == (True, 2, None)


# --- from dialogs -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_set_from_dialogs_has_a_context_for_each_model_turn_after_a_user_turn() -> None:
    chat = dialog_with_turns(
        ["Hi", "Hello!", "Any plans?", "A walk."], external_id="chat-1", purpose="safety"
    )
    greeted = DialogFactory(external_id="greet-1", purpose="pretrain")
    for index, (speaker, text) in enumerate([("model", "Welcome!"), ("user", "Hi"), ("model", "Hey.")]):
        TurnFactory(dialog=greeted, index=index, speaker=speaker, text=text)
    dialog_with_turns(["Only a user turn"], external_id="mute-1")

    result = evaluation_set_from_dialogs(name="held-out", dialogs=Dialog.objects.all(), description="demo")

    evaluation_set = result.evaluation_set
    assert (evaluation_set.name, evaluation_set.version, evaluation_set.source) == ("held-out", 1, "dialogs")
    contexts = {c.external_id: c for c in evaluation_set.contexts.all()}
    assert set(contexts) == {"chat-1#1", "chat-1#3", "greet-1#2"}
    assert contexts["chat-1#1"].turns == [{"speaker": "user", "text": "Hi"}]
    assert contexts["chat-1#3"].turns == [
        {"speaker": "user", "text": "Hi"},
        {"speaker": "model", "text": "Hello!"},
        {"speaker": "user", "text": "Any plans?"},
    ]
    assert (contexts["chat-1#3"].reference, contexts["chat-1#3"].purpose) == ("A walk.", "safety")
    assert contexts["chat-1#3"].source_dialog == chat
    assert [t["text"] for t in contexts["greet-1#2"].turns] == ["Welcome!", "Hi"]
    assert contexts["greet-1#2"].purpose == "quality"  # a pre-training dialog tests quality
    assert contexts["greet-1#2"].source_dialog == greeted


@pytest.mark.django_db
def test_a_set_from_dialogs_takes_their_role_or_the_purpose_given() -> None:
    everest = RoleFactory(slug="everest")
    dialog_with_turns(["Hi", "I am Everest."], external_id="role-1", purpose="role", role=everest)
    dialog_with_turns(["Hi", "Hello"], external_id="q-1", purpose="quality")

    as_given = evaluation_set_from_dialogs(name="all-safety", dialogs=Dialog.objects.all(), purpose="safety")
    own = evaluation_set_from_dialogs(name="own", dialogs=Dialog.objects.all())

    assert set(as_given.evaluation_set.contexts.values_list("purpose", flat=True)) == {"safety"}
    role_context = own.evaluation_set.contexts.get(external_id="role-1#1")
    assert (role_context.purpose, role_context.role) == ("role", everest)


@pytest.mark.django_db
def test_a_role_dialog_without_a_role_refuses_the_set_naming_it() -> None:
    dialog_with_turns(["Hi", "Hello"], external_id="q-1", purpose="quality")
    dialog_with_turns(["Hi", "Who am I?"], external_id="role-9", purpose="role")

    with pytest.raises(EvaluationSetImportError) as refused:
        evaluation_set_from_dialogs(name="roles", dialogs=Dialog.objects.all())

    assert [e.field for e in refused.value.errors] == ["role-9#1: role"]
    assert EvaluationSet.objects.count() == 0


@pytest.mark.django_db
def test_a_dialog_with_the_longest_id_gives_contexts_too() -> None:
    dialog_with_turns(["Hi", "Hello"] * 6, external_id="d" * 200)

    result = evaluation_set_from_dialogs(name="long", dialogs=Dialog.objects.all())

    assert result.evaluation_set.contexts.order_by("index").last().external_id == "d" * 200 + "#11"


@pytest.mark.django_db
def test_dialogs_with_nothing_to_answer_make_no_set() -> None:
    dialog_with_turns(["Only a user turn"], external_id="mute-1")

    with pytest.raises(EvaluationSetError, match="nothing to evaluate"):
        evaluation_set_from_dialogs(name="empty", dialogs=Dialog.objects.all())
    assert EvaluationSet.objects.count() == 0
