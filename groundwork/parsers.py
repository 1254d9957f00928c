"""Reading requests, shared by every app: JSON and JSONL bodies (with a size cap and a nesting
bound, refused with a JSON 4xx), ids in paths, query strings and bodies (bounded to what a
database id can be). ``groundwork.http_errors`` answers the errors raised here.

Every JSON body of the API is read by ``JSONParser`` (the default parser): a body over
``DATA_UPLOAD_MAX_MEMORY_SIZE`` gets 413, invalid JSON (NaN, Infinity, nesting beyond
``groundwork.jsonl.MAX_JSON_DEPTH``) gets 400, each with ``{"detail": ...}``. The import
endpoints take larger bodies, up to ``IMPORT_MAX_BODY_BYTES`` (``IMPORT_PARSERS``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework import renderers, serializers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import BaseParser, get_encoding

from groundwork.errors import DomainError
from groundwork.jsonl import decode_json

# The largest value of a database id (a PostgreSQL bigint, an SQLite integer).
ID_MAX = 2**63 - 1


# --- bodies -------------------------------------------------------------------------------------


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def _read_body(stream: Any, parser_context: Mapping[str, Any] | None, limit_setting: str) -> bytes:
    """The whole body, or ``RequestTooLarge`` when it is over the limit ``limit_setting`` names
    (checked against Content-Length before anything is read, and against what was read)."""
    limit: int | None = getattr(settings, limit_setting)
    if limit is None:
        return stream.read()
    request = (parser_context or {}).get("request")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
    except ValueError:
        declared = 0
    body = b"" if declared > limit else stream.read(limit + 1)
    if declared > limit or len(body) > limit:
        raise RequestTooLarge(
            f"The request body is {max(declared, len(body)):,} bytes, over the limit of {limit:,} bytes "
            f"for this endpoint ({limit_setting})."
        )
    return body


class JSONParser(BaseParser):
    """``application/json``, strict: a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is 413, invalid
    JSON (NaN, Infinity, too deeply nested) is 400, each with a JSON ``detail``.

    Not a subclass of DRF's ``JSONParser``: DRF reads a ``JSONParser``'s body through Django's
    ``request.body``, whose size check raises ``RequestDataTooBig`` before any parser runs, and
    only one cap (the same for a token request and a corpus import) could apply. This parser
    reads the stream itself, with the cap its endpoint is given."""

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer
    limit_setting = "DATA_UPLOAD_MAX_MEMORY_SIZE"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = get_encoding(parser_context or {})
        body = _read_body(stream, parser_context, self.limit_setting)
        try:
            return decode_json(body.decode(encoding))
        except ValueError as exc:  # UnicodeDecodeError included
            raise ParseError(f"JSON parse error - {exc}") from None


class ImportJSONParser(JSONParser):
    """A JSON import body (a list of records), up to ``IMPORT_MAX_BODY_BYTES``."""

    limit_setting = "IMPORT_MAX_BODY_BYTES"


@dataclass(frozen=True)
class JSONLines:
    lines: Iterable[bytes]


class JSONLinesParser(BaseParser):
    """``application/x-ndjson``: one record per line, as in the JSONL files the commands import,
    up to ``IMPORT_MAX_BODY_BYTES``. The lines are decoded by the importer (``groundwork.jsonl``),
    so that each error names its line."""

    media_type = "application/x-ndjson"
    limit_setting = "IMPORT_MAX_BODY_BYTES"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> JSONLines:
        return JSONLines(lines=io.BytesIO(_read_body(stream, parser_context, self.limit_setting)))


# The parsers of the import endpoints (dialogs, judgments, documents).
IMPORT_PARSERS = [ImportJSONParser, JSONLinesParser]


def body_records(
    data: Any,
    *,
    lines: Callable[[Iterable[bytes]], Iterator[Any]],
    objects: Callable[[Iterable[Any]], Iterator[Any]],
) -> Iterator[Any]:
    """An import request's records: JSONL lines, a JSON list, or one JSON object."""
    if isinstance(data, JSONLines):
        return lines(data.lines)
    return objects(data if isinstance(data, list) else [data])


# --- ids and query strings ----------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses
# Text in a URL or a query string with no control character (U+0000–U+001F, U+007F–U+009F).
PRINTABLE_PATTERN = r"[^\x00-\x1f\x7f-\x9f]+"
_PRINTABLE = re.compile(PRINTABLE_PATTERN)


class DatabaseIdConverter:
    """``<id:name>`` in a URL: a database id, 1 to ``ID_MAX``; anything else does not match (404),
    instead of reaching the database as a number it cannot hold."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= ID_MAX:
            raise ValueError(f"{value} is not a database id")
        return number

    def to_url(self, value: int | str) -> str:
        return str(value)


class PrintableTextConverter:
    """``<text:name>`` in a URL: like ``<path:...>`` (slashes allowed), without control characters
    (no id can hold one: the importers refuse them, and PostgreSQL cannot look up a NUL)."""

    regex = PRINTABLE_PATTERN

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


def parse_whole_number(value: str, *, minimum: int = 0, maximum: int = ID_MAX) -> int:
    """``value`` as a whole number written in ASCII digits, ``minimum`` to ``maximum``, or
    ``ValueError`` saying so."""
    digits = value.strip()
    if _DIGITS.fullmatch(digits) and len(digits) <= len(str(maximum)) and minimum <= int(digits) <= maximum:
        return int(digits)
    raise ValueError(f"expected a whole number from {minimum} to {maximum}, got {value[:40]!r}")


class ParameterError(DomainError):
    """A query parameter that is not what it must be: the API answers 400 ``{name: [problem]}``,
    a page 400 with the message (``groundwork.http_errors``)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem

    def body(self) -> dict[str, Any]:
        return {self.name: [self.problem]}


def query_number(
    params: Mapping[str, str], name: str, *, minimum: int = 0, maximum: int = ID_MAX
) -> int | None:
    """The query parameter ``name`` as a whole number (None when absent or blank), or
    ``ParameterError``."""
    value = params.get(name)
    if value is None or not value.strip():
        return None
    try:
        return parse_whole_number(value, minimum=minimum, maximum=maximum)
    except ValueError as exc:
        raise ParameterError(name, str(exc)) from None


def query_text(params: Mapping[str, str], name: str, *, choices: Iterable[str] | None = None) -> str | None:
    """The query parameter ``name`` (None when absent or blank): one of ``choices`` when given,
    else text with no control character (PostgreSQL cannot even compare a NUL); or
    ``ParameterError``."""
    value = params.get(name)
    if value is None or not value.strip():
        return None
    if choices is not None:
        allowed = list(choices)
        if value not in allowed:
            raise ParameterError(name, f"expected one of {', '.join(allowed)}, got {value[:40]!r}")
    elif not _PRINTABLE.fullmatch(value):
        raise ParameterError(name, "contains a control character")
    return value


class DatabaseIdField(serializers.IntegerField):
    """An id in a request body: 1 to ``ID_MAX``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", ID_MAX)
        super().__init__(**kwargs)


class RowsField(serializers.ListField):
    """A list of ids of ``queryset``'s rows, as the rows (in the order given, repeats dropped):
    at most ``max_length`` of them, looked up in one query."""

    def __init__(self, *, queryset: Any, max_length: int = 100, **kwargs: Any) -> None:
        self.queryset = queryset
        super().__init__(child=DatabaseIdField(), max_length=max_length, **kwargs)

    def to_internal_value(self, data: Any) -> list[Any]:
        if isinstance(data, list) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)  # before any id is looked up
        ids = list(dict.fromkeys(super().to_internal_value(data)))
        rows = self.queryset.in_bulk(ids)
        missing = [str(pk) for pk in ids if pk not in rows]
        if missing:
            noun = self.queryset.model._meta.verbose_name
            raise ValidationError(f"no {noun} with the id {', '.join(missing[:10])}")
        return [rows[pk] for pk in ids]
