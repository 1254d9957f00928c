"""The JSONL format of judgments made elsewhere, parsed and checked line by line: one judgment
(one rater's answer about one attribute of one item) per line::

    {"item": {"key": "fed-4", "context": [{"speaker": "user", "text": "Hi"}], "response": "Hello!"},
     "rater": "A1B2", "attribute": "specific", "value": "yes"}

Safety campaigns ask one question per objective: their lines say ``"attribute": "violates"`` and
name the objective, ``"objective": "harm"`` (one of the campaign's objectives). ``context`` is
optional. A bad line is a ``groundwork.jsonl.RecordError`` naming the line and the field;
``annotation.services.judgment_imports`` imports the checked records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from annotation import rules
from annotation.models import Item
from dialogs.records import Limits, parse_turn
from groundwork.jsonl import RecordError, check_printable, json_kind, required_string

SAFETY_ATTRIBUTE = "violates"  # the attribute of a safety line; the objective says which question
MAX_KEY_CHARS = Item._meta.get_field("key").max_length
MAX_RATER_CHARS = 140  # a username holds 150 characters, with the prefix
RATER_PATTERN = re.compile(r"[\w.@+-]+")  # the characters Django allows in usernames (fullmatch)
LINE_KEYS = frozenset({"item", "rater", "attribute", "value", "objective"})
ITEM_KEYS = frozenset({"key", "context", "response"})


@dataclass(frozen=True)
class JudgmentRecord:
    """One checked line: who answered what about which item."""

    key: str
    context: tuple[tuple[str, str], ...]  # (speaker, text) of the turns before the response
    response: str
    rater: str
    attribute: str
    value: str
    objective: str | None = None
    line: int = field(default=0, compare=False)

    def context_json(self) -> list[dict[str, str]]:
        return [{"speaker": speaker, "text": text} for speaker, text in self.context]


def parse_object(obj: Any, line: int, limits: Limits) -> JudgmentRecord:
    """Check one decoded judgment object, or raise ``RecordError``."""
    if not isinstance(obj, dict):
        raise RecordError(line, "(json)", f"expected an object, got {json_kind(obj)}")
    unknown = sorted(set(obj) - LINE_KEYS)
    if unknown:
        raise RecordError(line, unknown[0], f"unknown field (known: {', '.join(sorted(LINE_KEYS))})")
    item = obj.get("item")
    if not isinstance(item, dict):
        raise RecordError(
            line, "item", "missing" if "item" not in obj else f"expected an object, got {json_kind(item)}"
        )
    unknown = sorted(set(item) - ITEM_KEYS)
    if unknown:
        raise RecordError(
            line, f"item.{unknown[0]}", f"unknown field (known: {', '.join(sorted(ITEM_KEYS))})"
        )
    key = check_printable(required_string(item, "key", line, where="item.key"), line, "item.key")
    if len(key) > MAX_KEY_CHARS:
        raise RecordError(line, "item.key", f"is {len(key)} characters, over {MAX_KEY_CHARS}")
    response = required_string(item, "response", line, where="item.response")
    if len(response) > limits.max_turn_chars:
        raise RecordError(
            line, "item.response", f"{len(response)} characters, over the limit of {limits.max_turn_chars}"
        )
    context = _context(item.get("context", []), line, limits)

    rater = required_string(obj, "rater", line)
    if len(rater) > MAX_RATER_CHARS:
        raise RecordError(line, "rater", f"is {len(rater)} characters, over {MAX_RATER_CHARS}")
    if not RATER_PATTERN.fullmatch(rater):
        raise RecordError(line, "rater", "only letters, digits and @ . + - _ (no spaces)")
    attribute = required_string(obj, "attribute", line)
    value = obj.get("value")
    if not isinstance(value, str) or value.lower() not in rules.VALUES:
        shown = "missing" if "value" not in obj else f"{value!r} is not an answer"
        raise RecordError(line, "value", f"{shown} (expected one of {', '.join(rules.VALUES)})")
    objective = obj.get("objective")
    if objective is not None and not isinstance(objective, str):
        raise RecordError(line, "objective", f"expected a string, got {json_kind(objective)}")
    return JudgmentRecord(
        key=key,
        context=context,
        response=response,
        rater=rater,
        attribute=attribute,
        value=value.lower(),
        objective=objective or None,
        line=line,
    )


def _context(turns: Any, line: int, limits: Limits) -> tuple[tuple[str, str], ...]:
    if turns is None:
        return ()
    if not isinstance(turns, list):
        raise RecordError(line, "item.context", f"expected a list, got {json_kind(turns)}")
    if len(turns) > limits.max_turns:
        raise RecordError(line, "item.context", f"{len(turns)} turns, over the limit of {limits.max_turns}")
    out = []
    for index, turn in enumerate(turns):
        parsed = parse_turn(turn, f"item.context[{index}]", line, limits)
        out.append((parsed.speaker, parsed.text))
    return tuple(out)
