"""The JSONL format of evaluation sets, parsed and checked line by line. Pure: no Django import.

One context per line::

    {"id": "mtb-1", "context": [{"speaker": "user", "text": "Do you like jazz?"}], "purpose": "quality"}

``purpose`` is one of quality, safety, groundedness, role. Optional keys: ``role`` (a role's slug;
required for purpose role) and ``reference`` (a reference response). The turns are checked as a
dialog's are (``dialogs.records``: speakers, limits). Every problem is a ``RecordError`` naming
the line and the field (``context[1].speaker``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dialogs.records import MAX_NAME_CHARS, Limits, TurnRecord, parse_turn
from groundwork.jsonl import RecordError, check_printable, json_kind, load_line, required_string

EVALUATION_PURPOSES = ("quality", "safety", "groundedness", "role")
KNOWN_KEYS = frozenset({"id", "context", "purpose", "role", "reference"})
# A dialog's id (200 characters at most) with "#<turn index>": the ids of sets made from dialogs.
MAX_ID_CHARS = 250
MAX_SET_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 10_000
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class EvaluationContextRecord:
    id: str
    purpose: str
    context: tuple[TurnRecord, ...]
    role: str | None = None
    reference: str = ""
    # Where the record came from in its file; not part of the context's content.
    line: int = field(default=0, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The record as its JSONL object (optional keys only when set)."""
        out: dict[str, Any] = {
            "id": self.id,
            "context": [{"speaker": t.speaker, "text": t.text} for t in self.context],
            "purpose": self.purpose,
        }
        if self.role:
            out["role"] = self.role
        if self.reference:
            out["reference"] = self.reference
        return out


def parse_line(raw: str | bytes, line: int, limits: Limits = DEFAULT_LIMITS) -> EvaluationContextRecord:
    """Parse one JSONL line into a context record, or raise ``RecordError``."""
    return parse_object(load_line(raw, line, limits), line, limits)


def parse_object(obj: Any, line: int, limits: Limits = DEFAULT_LIMITS) -> EvaluationContextRecord:
    """Check one decoded context object, or raise ``RecordError``."""
    if not isinstance(obj, dict):
        raise RecordError(line, "(json)", f"expected an object, got {json_kind(obj)}")
    unknown = sorted(set(obj) - KNOWN_KEYS)
    if unknown:
        raise RecordError(line, unknown[0], f"unknown field (known: {', '.join(sorted(KNOWN_KEYS))})")

    context_id = check_printable(required_string(obj, "id", line), line, "id")
    if len(context_id) > MAX_ID_CHARS:
        raise RecordError(line, "id", f"is {len(context_id)} characters, over {MAX_ID_CHARS}")

    turns_raw = obj.get("context")
    if not isinstance(turns_raw, list):
        what = "missing" if "context" not in obj else f"expected a list of turns, got {json_kind(turns_raw)}"
        raise RecordError(line, "context", what)
    if not turns_raw:
        raise RecordError(line, "context", "a context needs at least one turn")
    if len(turns_raw) > limits.max_turns:
        raise RecordError(line, "context", f"{len(turns_raw)} turns, over the limit of {limits.max_turns}")
    turns = tuple(parse_turn(t, f"context[{i}]", line, limits) for i, t in enumerate(turns_raw))

    purpose = obj.get("purpose")
    if purpose not in EVALUATION_PURPOSES:
        shown = "missing" if "purpose" not in obj else f"unknown value {purpose!r}"
        raise RecordError(line, "purpose", f"{shown} (expected one of {', '.join(EVALUATION_PURPOSES)})")

    role = _optional_text(obj, "role", line)
    if role is not None:
        check_printable(role, line, "role")
        if len(role) > MAX_NAME_CHARS:
            raise RecordError(line, "role", f"is {len(role)} characters, over {MAX_NAME_CHARS}")
    elif purpose == "role":
        raise RecordError(line, "role", "missing (a context of purpose 'role' names the role, by its slug)")

    reference = _optional_text(obj, "reference", line) or ""
    if len(reference) > limits.max_turn_chars:
        raise RecordError(
            line, "reference", f"{len(reference)} characters, over the limit of {limits.max_turn_chars}"
        )
    return EvaluationContextRecord(
        id=context_id, purpose=purpose, context=turns, role=role, reference=reference, line=line
    )


def check_set_name(name: str) -> str:
    """``name`` stripped, when it is a name a set can have (one printable line, at most
    ``MAX_SET_NAME_CHARS`` characters), else ``ValueError`` saying why."""
    stripped = name.strip() if isinstance(name, str) else ""
    if not stripped:
        raise ValueError("a set needs a name")
    if len(stripped) > MAX_SET_NAME_CHARS:
        raise ValueError(f"is {len(stripped)} characters, over {MAX_SET_NAME_CHARS}")
    try:
        check_printable(required_string({"name": stripped}, "name", 0), 0, "name")
    except RecordError as error:
        raise ValueError(error.message) from None
    return stripped


def check_description(description: str) -> str:
    """``description`` stripped, when a database can store it (no NUL, no unpaired surrogate; at
    most ``MAX_DESCRIPTION_CHARS`` characters), else ``ValueError`` saying why."""
    stripped = description.strip()
    if len(stripped) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"is {len(stripped)} characters, over {MAX_DESCRIPTION_CHARS}")
    if not stripped:
        return ""
    try:
        return required_string({"description": stripped}, "description", 0)
    except RecordError as error:
        raise ValueError(error.message) from None


def content_sha256(records: Iterable[EvaluationContextRecord]) -> str:
    """SHA-256 of the records as canonical JSONL (keys sorted, UTF-8), in their order: two sets
    with the same contexts in the same order have the same digest."""
    digest = hashlib.sha256()
    for record in records:
        line = json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _optional_text(obj: dict[str, Any], key: str, line: int) -> str | None:
    """``obj[key]`` as text, ``None`` when absent, null or empty; ``RecordError`` otherwise."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    return required_string(obj, key, line)
