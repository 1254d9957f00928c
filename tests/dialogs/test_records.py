"""The JSONL dialog format: ``dialogs.records.parse_line`` and ``DialogRecord.to_json``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialogs.records import DialogRecord, Limits, RecordError, TurnRecord, parse_line

LIMITS = Limits(max_turns=2, max_turn_chars=20, max_line_bytes=400)


def line_of(**overrides: Any) -> str:
    """A valid JSONL line, with keys replaced (or removed, when the value is ``...``)."""
    obj: dict[str, Any] = {
        "id": "d1",
        "purpose": "quality",
        "turns": [{"speaker": "user", "text": "Hi"}, {"speaker": "model", "text": "Hello!"}],
        "meta": {},
    }
    for key, value in overrides.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj)


def assert_error(raw: str | bytes, field: str, *, line: int = 7, limits: Limits = LIMITS) -> RecordError:
    with pytest.raises(RecordError) as caught:
        parse_line(raw, line, limits)
    assert (caught.value.line, caught.value.field) == (line, field)
    assert f"line {line}, field {field}:" in str(caught.value)
    return caught.value


def test_a_valid_line_with_every_optional_key_parses() -> None:
    raw = line_of(
        mode="adversarial",
        role="travel-agent",
        model_version="lamda-2b-ft3",
        meta={"annotator": "w17", "tags": ["x"]},
    )

    record = parse_line(raw, 3, LIMITS)

    # The dialog's model version is its model turns' (records keep it per turn).
    assert record == DialogRecord(
        id="d1",
        purpose="quality",
        mode="adversarial",
        role="travel-agent",
        turns=(TurnRecord("user", "Hi"), TurnRecord("model", "Hello!", model_version="lamda-2b-ft3")),
        meta={"annotator": "w17", "tags": ["x"]},
    )
    assert record.line == 3


def test_optional_keys_default_when_absent() -> None:
    record = parse_line(line_of(meta=...), 1, LIMITS)

    assert (record.mode, record.role, record.meta) == ("natural", None, {})
    assert [(t.model_version, t.fallback) for t in record.turns] == [("", ""), ("", "")]


def test_a_turns_model_version_wins_over_the_dialogs_and_user_turns_have_none() -> None:
    raw = line_of(
        model_version="gw-1",
        turns=[
            {"speaker": "user", "text": "Hi"},
            {"speaker": "model", "text": "Hello!"},
            {"speaker": "user", "text": "And you?"},
            {"speaker": "model", "text": "Fine.", "model_version": "gw-2"},
            {"speaker": "user", "text": "Say something bad."},
            {"speaker": "model", "text": "Let us talk about tea.", "fallback": "unsafe"},
        ],
    )

    limits = Limits(max_turns=6, max_turn_chars=100, max_line_bytes=10_000)
    record = parse_line(raw, 1, limits)

    assert [(t.speaker, t.model_version, t.fallback) for t in record.turns] == [
        ("user", "", ""),
        ("model", "gw-1", ""),
        ("user", "", ""),
        ("model", "gw-2", ""),
        ("user", "", ""),
        ("model", "gw-1", "unsafe"),
    ]
    # Written back per turn: the same dialog.
    assert parse_line(json.dumps(record.to_json()), 1, limits) == record
    assert "model_version" not in record.to_json()


@pytest.mark.parametrize(
    ("turn", "field", "message"),
    [
        ({"speaker": "user", "text": "Hi", "model_version": "gw-1"}, "turns[0].model_version", "only model"),
        ({"speaker": "user", "text": "Hi", "fallback": "unsafe"}, "turns[0].fallback", "only model"),
        ({"speaker": "model", "text": "Hi", "fallback": "rude"}, "turns[0].fallback", "unknown value 'rude'"),
        (
            {"speaker": "model", "text": "Hi", "model_version": 7},
            "turns[0].model_version",
            "expected a string",
        ),
        (
            {"speaker": "model", "text": "Hi", "model_version": "m" * 101},
            "turns[0].model_version",
            "over 100",
        ),
        ({"speaker": "model", "text": "Hi", "author": "x"}, "turns[0].author", "unknown field"),
    ],
)
def test_a_bad_turn_level_model_version_or_fallback_names_its_turn(
    turn: dict[str, Any], field: str, message: str
) -> None:
    error = assert_error(line_of(turns=[turn]), field)
    assert message in error.message


def test_a_bytes_line_parses_like_a_str_line() -> None:
    raw = line_of(turns=[{"speaker": "user", "text": "Grüß Gott ☃"}])

    assert parse_line(raw.encode(), 1, LIMITS) == parse_line(raw, 1, LIMITS)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param('{"id": "d1", "purpose": ', "(json)", id="broken-json"),
        pytest.param(b'{"id": "\xff"}', "(json)", id="not-utf8"),
        pytest.param('["d1", "quality"]', "(json)", id="a-list-not-an-object"),
        pytest.param('"d1"', "(json)", id="a-string-not-an-object"),
        pytest.param(line_of(speaker="user"), "speaker", id="unknown-top-level-key"),
        pytest.param(line_of(id=...), "id", id="id-missing"),
        pytest.param(line_of(id=""), "id", id="id-empty"),
        pytest.param(line_of(id="   "), "id", id="id-blank"),
        pytest.param(line_of(id=17), "id", id="id-not-a-string"),
        pytest.param(line_of(id="x" * 201), "id", id="id-over-200-chars"),
        pytest.param(line_of(purpose="chitchat"), "purpose", id="purpose-unknown"),
        pytest.param(line_of(purpose=...), "purpose", id="purpose-missing"),
        pytest.param(line_of(mode="hostile"), "mode", id="mode-unknown"),
        pytest.param(line_of(turns=...), "turns", id="turns-missing"),
        pytest.param(line_of(turns={"speaker": "user", "text": "Hi"}), "turns", id="turns-not-a-list"),
        pytest.param(line_of(turns=[]), "turns", id="turns-empty"),
        pytest.param(line_of(turns=[{"speaker": "user", "text": "a"}] * 3), "turns", id="turns-over-limit"),
        pytest.param(line_of(turns=["Hi"]), "turns[0]", id="turn-not-an-object"),
        pytest.param(
            line_of(turns=[{"speaker": "user", "text": "Hi"}, {"speaker": "bot", "text": "Hello"}]),
            "turns[1].speaker",
            id="turn-speaker-unknown",
        ),
        pytest.param(line_of(turns=[{"text": "Hi"}]), "turns[0].speaker", id="turn-speaker-missing"),
        pytest.param(
            line_of(turns=[{"speaker": "user", "text": "Hi", "score": 1}]),
            "turns[0].score",
            id="turn-unknown-key",
        ),
        pytest.param(line_of(turns=[{"speaker": "user", "text": ""}]), "turns[0].text", id="text-empty"),
        pytest.param(
            line_of(turns=[{"speaker": "user", "text": " \t\n "}]), "turns[0].text", id="text-whitespace"
        ),
        pytest.param(line_of(turns=[{"speaker": "user"}]), "turns[0].text", id="text-missing"),
        pytest.param(line_of(turns=[{"speaker": "user", "text": 5}]), "turns[0].text", id="text-a-number"),
        pytest.param(
            line_of(turns=[{"speaker": "user", "text": "Hi"}, {"speaker": "model", "text": "y" * 21}]),
            "turns[1].text",
            id="text-over-max-turn-chars",
        ),
        pytest.param(line_of(meta=["a", "b"]), "meta", id="meta-a-list"),
        pytest.param(line_of(meta="note"), "meta", id="meta-a-string"),
    ],
)
def test_a_bad_line_names_its_line_and_field(raw: str | bytes, field: str) -> None:
    assert_error(raw, field)


def test_the_first_unknown_turn_is_reported_not_a_later_one() -> None:
    raw = line_of(turns=[{"speaker": "model", "text": "ok"}, {"speaker": "bot", "text": ""}])

    error = assert_error(raw, "turns[1].speaker")

    assert "'bot'" in error.message


def test_text_at_the_limit_is_accepted_one_more_is_refused() -> None:
    at_limit = line_of(turns=[{"speaker": "user", "text": "é" * 20}])
    over = line_of(turns=[{"speaker": "user", "text": "é" * 21}])

    assert parse_line(at_limit, 1, LIMITS).turns[0].text == "é" * 20
    error = assert_error(over, "turns[0].text")
    assert "21" in error.message


def test_a_line_over_max_line_bytes_is_refused_before_parsing() -> None:
    # Valid JSON otherwise, and each turn within the character limit: only the size is wrong.
    raw = line_of(meta={"padding": "p" * 400})

    error = assert_error(raw, "(line)")

    assert str(len(raw)) in error.message


def test_max_line_bytes_counts_bytes_not_characters() -> None:
    limits = Limits(max_turns=2, max_turn_chars=200, max_line_bytes=150)
    text = "☃" * 40  # 40 characters, 120 bytes in UTF-8
    raw = line_of(turns=[{"speaker": "user", "text": text}])
    raw = raw.replace("\\u2603", "☃")  # json.dumps escaped it; put the raw characters back
    assert len(raw) <= 150 < len(raw.encode())

    assert_error(raw, "(line)", limits=limits)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"turns": [{"speaker": "user", "text": "a\u0000b"}]}, "turns[0].text"),
        ({"meta": {"note": "a\u0000b"}}, "meta"),
        ({"model_version": "v\u0000"}, "model_version"),
    ],
)
def test_nul_characters_are_refused_where_postgresql_could_not_store_them(
    overrides: dict[str, Any], field: str
) -> None:
    error = assert_error(line_of(**overrides), field)
    assert "NUL" in error.message


def test_an_unpaired_surrogate_is_refused_where_it_stands() -> None:
    error = assert_error(line_of(turns=[{"speaker": "user", "text": "a\ud800b"}]), "turns[0].text")
    assert "unpaired surrogate" in error.message


def test_to_json_round_trips_through_parse_line() -> None:
    record = DialogRecord(
        id="rt:1/a",
        purpose="groundedness",
        mode="sensitive",
        role="chef",
        turns=(
            TurnRecord("user", "What is 2+2?"),
            TurnRecord("model", "4, says the calculator.", model_version="m-7"),
            TurnRecord("user", "And 2/0?"),
            TurnRecord("model", "Let us talk about something else.", model_version="m-8", fallback="unsafe"),
        ),
        meta={"k": [1, 2, {"n": None}]},
    )

    assert parse_line(json.dumps(record.to_json()), 1) == record


def test_to_json_leaves_out_optional_keys_that_are_not_set() -> None:
    record = DialogRecord(id="d", purpose="safety", turns=(TurnRecord("user", "x"),))

    assert record.to_json() == {
        "id": "d",
        "purpose": "safety",
        "turns": [{"speaker": "user", "text": "x"}],
        "meta": {},
    }


turn_strategy = st.builds(
    TurnRecord,
    speaker=st.sampled_from(["user", "model"]),
    # Any text but NUL and unpaired surrogates, which cannot be stored (refused, tested above).
    text=st.text(
        st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=50
    ).filter(lambda text: text.strip() != ""),
)


@settings(database=None)  # no example database written into the working tree
@given(
    turns=st.lists(turn_strategy, min_size=1, max_size=8),
    ensure_ascii=st.booleans(),
)
def test_any_valid_turns_round_trip_unchanged(turns: list[TurnRecord], ensure_ascii: bool) -> None:
    record = DialogRecord(id="prop", purpose="quality", turns=tuple(turns))
    raw = json.dumps(record.to_json(), ensure_ascii=ensure_ascii)

    parsed = parse_line(raw, 1, Limits(max_turns=8, max_turn_chars=50, max_line_bytes=100_000))

    assert parsed == record
    assert list(parsed.turns) == turns
