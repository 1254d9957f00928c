"""Reading JSONL imports line by line, with errors that name the line and the field. Pure.

Shared by every importer (dialogs, judgments, documents): each app parses one decoded object
into its own record; this module does the rest — size limit, JSON decoding, collecting the
errors of every line (``ImportErrors``), refusing a key given twice (``unique_records``).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from groundwork.errors import DomainError

NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"
# "\ud800" is valid JSON but not text: no UTF-8 file or PostgreSQL column can hold it.
SURROGATE_MESSAGE = "contains an unpaired surrogate (like \\ud800), which is not text"
# An import stops collecting after this many errors: enough to fix a file in one pass.
MAX_REPORTED_ERRORS = 50
# Arrays and objects nested deeper than this are refused, in request bodies and JSONL lines alike:
# no record of ours is nested more than a few levels, and a deeper one would exhaust Python's
# recursion limit (json.loads, json.dumps, the database adapter) somewhere later.
MAX_JSON_DEPTH = 64

T = TypeVar("T")


class LineLimits(Protocol):
    max_line_bytes: int


L = TypeVar("L", bound=LineLimits)


class Numbered(Protocol):
    line: int


R = TypeVar("R", bound=Numbered)


class RecordError(ValueError):
    """A bad line: where (line, field) and what is wrong."""

    def __init__(self, line: int, field: str, message: str) -> None:
        super().__init__(f"line {line}, field {field}: {message}")
        self.line = line
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


class ImportRefused(DomainError):
    """An import was refused and nothing was written; ``errors`` say where (line, field) and what.
    The API answers 400 with them all."""

    status = 400

    def __init__(self, errors: list[RecordError]) -> None:
        self.errors = errors
        more = "" if len(errors) < MAX_REPORTED_ERRORS else " (stopped counting)"
        super().__init__(f"{len(errors)} bad line(s){more}; first: {errors[0]}")

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "errors": [error.as_dict() for error in self.errors]}


class ImportErrors(list[RecordError]):
    """The errors of one import. ``add`` stops the import with the app's ``refused`` (an
    ``ImportRefused``) once ``MAX_REPORTED_ERRORS`` are in, so a huge bad file is not read to its
    end; ``refuse_if_any`` stops it with whatever was found. Either way the errors go out sorted
    by line, at most ``MAX_REPORTED_ERRORS`` of them."""

    def __init__(self, refused: type[ImportRefused]) -> None:
        super().__init__()
        self.refused = refused

    def add(self, error: RecordError) -> None:
        self.append(error)
        if len(self) >= MAX_REPORTED_ERRORS:
            raise self.refused(self.by_line())

    def by_line(self) -> list[RecordError]:
        return sorted(self, key=lambda e: e.line)[:MAX_REPORTED_ERRORS]

    def refuse_if_any(self) -> None:
        if self:
            raise self.refused(self.by_line())


def unique_records(
    records: Iterable[R | RecordError], *, key: Callable[[R], str], field: str, errors: ImportErrors
) -> dict[str, R]:
    """The parsed records by ``key``, in file order. A bad line's error goes to ``errors``, and so
    does a record whose key an earlier line has (``field``: ``duplicate id 'd-1' (also line 3)``)."""
    found: dict[str, R] = {}
    for record in records:
        if isinstance(record, RecordError):
            errors.add(record)
            continue
        value = key(record)
        if value in found:
            message = f"duplicate {field} {value!r} (also line {found[value].line})"
            errors.add(RecordError(record.line, field, message))
        else:
            found[value] = record
    return found


def load_line(raw: str | bytes, line: int, limits: LineLimits) -> Any:
    """One JSONL line decoded, its size and its JSON checked, or ``RecordError``."""
    try:
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    except UnicodeEncodeError:
        raise RecordError(line, "(line)", "not valid Unicode text (an unpaired surrogate)") from None
    if size > limits.max_line_bytes:
        raise RecordError(line, "(line)", f"line is {size} bytes, over the limit of {limits.max_line_bytes}")
    try:
        return decode_json(raw)
    except ValueError as exc:
        raise RecordError(line, "(json)", f"not valid JSON: {exc}") from None


def decode_json(raw: str | bytes) -> Any:
    """``raw`` decoded as strict JSON (no NaN or Infinity, at most ``MAX_JSON_DEPTH`` levels of
    arrays and objects), or ``ValueError`` saying what is wrong. Every JSON request body and
    every JSONL line is decoded here."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(_too_deep()) from None
    # JSONDecodeError and UnicodeDecodeError are ValueErrors and say where they stopped.
    if _nested_deeper_than(value, MAX_JSON_DEPTH):
        raise ValueError(_too_deep())
    return value


def _too_deep() -> str:
    return f"arrays and objects are nested more than {MAX_JSON_DEPTH} levels deep"


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` has more than ``limit`` levels of lists and dicts (walked level by level,
    not recursively, so that any depth is measured)."""
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, (dict, list))
        ]
    return False


def parse_each_line(
    lines: Iterable[str | bytes], parse: Callable[[Any, int, L], T], limits: L
) -> Iterator[T | RecordError]:
    """``parse`` each JSONL line's object (blank lines skipped): a record, or the line's error."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            yield parse(load_line(raw, number, limits), number, limits)
        except RecordError as error:
            yield error


def parse_each_object(
    objects: Iterable[Any], parse: Callable[[Any, int, L], T], limits: L
) -> Iterator[T | RecordError]:
    """The same for decoded objects (an API body); "line" is the 1-based position."""
    for number, obj in enumerate(objects, start=1):
        try:
            yield parse(obj, number, limits)
        except RecordError as error:
            yield error


def required_string(obj: dict[str, Any], key: str, line: int, *, where: str | None = None) -> str:
    """``obj[key]`` as a non-blank string PostgreSQL can store, or ``RecordError`` at ``where``."""
    where = where or key
    value = obj.get(key)
    if not isinstance(value, str):
        raise RecordError(
            line, where, "missing" if key not in obj else f"expected a string, got {json_kind(value)}"
        )
    if not value.strip():
        raise RecordError(line, where, "empty")
    if "\x00" in value:
        raise RecordError(line, where, NUL_MESSAGE)
    if not _encodable(value):
        raise RecordError(line, where, SURROGATE_MESSAGE)
    return value


def check_printable(value: str, line: int, where: str) -> str:
    """``value`` when it holds no control character (U+0000–U+001F, U+007F–U+009F: line breaks,
    tabs, escapes) and no line or paragraph separator, else ``RecordError`` at ``where``. For ids,
    keys and URLs: they end up in URLs, links and one-line logs, where such a character breaks them
    (a dialog id with a line break cannot be linked to)."""
    if value.isprintable():  # the common case; it also refuses what is checked below
        return value
    for position, char in enumerate(value, start=1):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise RecordError(
                line,
                where,
                f"contains a control character (U+{ord(char):04X}) at character {position}; "
                "it must be one line of printable text",
            )
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in words for an error message ("a list", "null")."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
