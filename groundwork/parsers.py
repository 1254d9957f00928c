"""Request parsers shared by the import endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework.parsers import BaseParser


@dataclass(frozen=True)
class JSONLines:
    lines: list[bytes]


class JSONLinesParser(BaseParser):
    """``application/x-ndjson``: one record per line, as in the JSONL files the commands import."""

    media_type = "application/x-ndjson"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> JSONLines:
        return JSONLines(lines=stream.read().splitlines())
