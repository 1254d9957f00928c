"""Request parsers shared by the import endpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rest_framework import status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from groundwork.jsonl import ImportRefused


@dataclass(frozen=True)
class JSONLines:
    lines: list[bytes]


class JSONLinesParser(BaseParser):
    """``application/x-ndjson``: one record per line, as in the JSONL files the commands import."""

    media_type = "application/x-ndjson"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> JSONLines:
        return JSONLines(lines=stream.read().splitlines())


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


def refused(exc: ImportRefused) -> Response:
    """400 with every bad line's line, field and message; nothing was written."""
    return Response(
        {"detail": str(exc), "errors": [e.as_dict() for e in exc.errors]}, status=status.HTTP_400_BAD_REQUEST
    )
