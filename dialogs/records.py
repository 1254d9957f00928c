"""The JSONL dialog format, parsed and checked line by line. Pure: no Django import.

One dialog per line::

    {"id": "d1", "purpose": "quality", "turns": [{"speaker": "user", "text": "Hi"}], "meta": {}}

Optional keys: ``mode`` (natural|sensitive|adversarial), ``role`` (a role's slug) and
``model_version``. A turn may carry ``model_version`` (the model version that wrote it: model
turns only) and ``fallback`` (``unsafe`` | ``empty``: a model turn that is a canned reply, not the
model's text). The dialog's ``model_version`` is the default of every model turn that names
none; user turns never have one. Records keep the version per turn only, so a file with the
dialog-level key and the same file written out per turn are the same dialogs. Every problem is
reported as a ``RecordError`` naming the line and the field (``turns[2].speaker``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from groundwork.jsonl import (
    NUL_MESSAGE,
    SURROGATE_MESSAGE,
    RecordError,
    check_printable,
    json_kind,
    load_line,
    required_string,
)

PURPOSES = ("quality", "safety", "groundedness", "role", "pretrain")
MODES = ("natural", "sensitive", "adversarial")
SPEAKERS = ("user", "model")
FALLBACKS = ("unsafe", "empty")
KNOWN_KEYS = frozenset({"id", "purpose", "mode", "role", "model_version", "turns", "meta"})
MAX_ID_CHARS = 200
MAX_NAME_CHARS = 100  # model_version and role slugs
TURN_KEYS = ("speaker", "text", "model_version", "fallback")


@dataclass(frozen=True)
class Limits:
    max_turns: int = 200
    max_turn_chars: int = 10_000
    max_line_bytes: int = 1_000_000


@dataclass(frozen=True)
class TurnRecord:
    speaker: str
    text: str
    model_version: str = ""  # model turns only
    fallback: str = ""  # model turns only: "unsafe" | "empty"

    def to_json(self) -> dict[str, str]:
        out = {"speaker": self.speaker, "text": self.text}
        if self.model_version:
            out["model_version"] = self.model_version
        if self.fallback:
            out["fallback"] = self.fallback
        return out


@dataclass(frozen=True)
class DialogRecord:
    id: str
    purpose: str
    turns: tuple[TurnRecord, ...]
    mode: str = "natural"
    role: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Where the record came from in its file; not part of the dialog's content.
    line: int = field(default=0, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The record as its JSONL object (optional keys only when set)."""
        out: dict[str, Any] = {"id": self.id, "purpose": self.purpose}
        if self.mode != "natural":
            out["mode"] = self.mode
        if self.role:
            out["role"] = self.role
        out["turns"] = [t.to_json() for t in self.turns]
        out["meta"] = self.meta
        return out


def parse_line(raw: str | bytes, line: int, limits: Limits = Limits()) -> DialogRecord:
    """Parse one JSONL line into a dialog record, or raise ``RecordError``."""
    return parse_object(load_line(raw, line, limits), line, limits)


def parse_object(obj: Any, line: int, limits: Limits = Limits()) -> DialogRecord:
    """Check one decoded dialog object, or raise ``RecordError``."""
    if not isinstance(obj, dict):
        raise RecordError(line, "(json)", f"expected an object, got {json_kind(obj)}")
    unknown = sorted(set(obj) - KNOWN_KEYS)
    if unknown:
        raise RecordError(line, unknown[0], f"unknown field (known: {', '.join(sorted(KNOWN_KEYS))})")

    dialog_id = check_printable(required_string(obj, "id", line), line, "id")
    if len(dialog_id) > MAX_ID_CHARS:
        raise RecordError(line, "id", f"is {len(dialog_id)} characters, over {MAX_ID_CHARS}")
    purpose = _choice(obj, "purpose", PURPOSES, line, required=True)
    mode = _choice(obj, "mode", MODES, line, required=False) or "natural"
    role = _optional_string(obj, "role", line)
    model_version = _optional_string(obj, "model_version", line) or ""
    for key, value in (("role", role or ""), ("model_version", model_version)):
        if len(value) > MAX_NAME_CHARS:
            raise RecordError(line, key, f"is {len(value)} characters, over {MAX_NAME_CHARS}")

    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise RecordError(line, "meta", f"expected an object, got {json_kind(meta)}")
    try:
        _check_storable(json.dumps(meta, allow_nan=False, ensure_ascii=False))
    except UnicodeEncodeError:
        raise RecordError(line, "meta", SURROGATE_MESSAGE) from None
    except ValueError as exc:
        raise RecordError(line, "meta", str(exc)) from None

    turns_raw = obj.get("turns")
    if not isinstance(turns_raw, list):
        what = "missing" if "turns" not in obj else f"expected a list, got {json_kind(turns_raw)}"
        raise RecordError(line, "turns", what)
    if not turns_raw:
        raise RecordError(line, "turns", "a dialog needs at least one turn")
    if len(turns_raw) > limits.max_turns:
        raise RecordError(line, "turns", f"{len(turns_raw)} turns, over the limit of {limits.max_turns}")
    turns = tuple(
        parse_dialog_turn(t, f"turns[{i}]", line, limits, default_model_version=model_version)
        for i, t in enumerate(turns_raw)
    )
    return DialogRecord(
        id=dialog_id,
        purpose=purpose,
        mode=mode,
        role=role,
        turns=turns,
        meta=meta,
        line=line,
    )


def parse_turn(obj: Any, where: str, line: int, limits: Limits) -> TurnRecord:
    """One ``{"speaker", "text"}`` turn at ``where`` (``turns[2]``), or ``RecordError``."""
    if not isinstance(obj, dict):
        raise RecordError(line, where, f"expected an object, got {json_kind(obj)}")
    unknown = sorted(set(obj) - {"speaker", "text"})
    if unknown:
        raise RecordError(line, f"{where}.{unknown[0]}", "unknown field (known: speaker, text)")
    speaker = obj.get("speaker")
    if speaker not in SPEAKERS:
        raise RecordError(line, f"{where}.speaker", f"unknown speaker {speaker!r} (expected user or model)")
    text = required_string(obj, "text", line, where=f"{where}.text")
    if len(text) > limits.max_turn_chars:
        raise RecordError(
            line,
            f"{where}.text",
            f"{len(text)} characters, over the limit of {limits.max_turn_chars}",
        )
    return TurnRecord(speaker=speaker, text=text)


def parse_dialog_turn(
    obj: Any, where: str, line: int, limits: Limits, *, default_model_version: str = ""
) -> TurnRecord:
    """One turn of a dialog: ``parse_turn``'s ``{"speaker", "text"}`` and, on a model turn, its
    ``model_version`` (``default_model_version`` when it names none) and ``fallback``."""
    if not isinstance(obj, dict):
        raise RecordError(line, where, f"expected an object, got {json_kind(obj)}")
    unknown = sorted(set(obj) - set(TURN_KEYS))
    if unknown:
        raise RecordError(line, f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(TURN_KEYS)})")
    turn = parse_turn({"speaker": obj.get("speaker"), "text": obj.get("text")}, where, line, limits)
    model_version = _optional_string(obj, "model_version", line, where=f"{where}.model_version") or ""
    if len(model_version) > MAX_NAME_CHARS:
        raise RecordError(
            line, f"{where}.model_version", f"is {len(model_version)} characters, over {MAX_NAME_CHARS}"
        )
    fallback = obj.get("fallback") or ""
    if fallback and fallback not in FALLBACKS:
        raise RecordError(
            line, f"{where}.fallback", f"unknown value {fallback!r} (expected one of {', '.join(FALLBACKS)})"
        )
    if turn.speaker != "model":
        for key, value in (("model_version", model_version), ("fallback", fallback)):
            if value:
                raise RecordError(line, f"{where}.{key}", f"only model turns have a {key.replace('_', ' ')}")
        return turn
    return TurnRecord(
        speaker=turn.speaker,
        text=turn.text,
        model_version=model_version or default_model_version,
        fallback=fallback,
    )


def _optional_string(obj: dict[str, Any], key: str, line: int, *, where: str | None = None) -> str | None:
    """``obj[key]`` when it is a non-empty printable string (None when absent or empty); errors
    name the field ``where`` (default: ``key``)."""
    where = where or key
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RecordError(line, where, f"expected a string, got {json_kind(value)}")
    if "\x00" in value:
        raise RecordError(line, where, NUL_MESSAGE)
    return check_printable(value, line, where)


def _choice(
    obj: dict[str, Any], key: str, choices: tuple[str, ...], line: int, *, required: bool
) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if value not in choices:
        shown = "missing" if key not in obj else f"unknown value {value!r}"
        raise RecordError(line, key, f"{shown} (expected one of {', '.join(choices)})")
    return value


def _check_storable(encoded: str) -> None:
    """Refuse what PostgreSQL's jsonb cannot hold (NaN and Infinity are refused by dumps): a NUL,
    or an unpaired surrogate (which encoding the text as UTF-8 finds)."""
    if "\\u0000" in encoded:  # dumps escapes a NUL even with ensure_ascii=False
        raise ValueError(NUL_MESSAGE)
    encoded.encode()
