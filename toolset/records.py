"""The JSONL document format WikiExtractor writes, parsed and checked line by line. No Django.

One document per line: ``{"id": "12", "url": "https://en.wikipedia.org/wiki?curid=12",
"title": "Anarchism", "text": "Anarchism is ..."}``. ``url``, ``title`` and ``text`` are required;
``id`` and any other key WikiExtractor may add (``revid``) are ignored. Problems are
``groundwork.jsonl.RecordError``s naming the line and the field, as for dialog imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from groundwork.jsonl import LineLimits, RecordError, check_printable, json_kind, required_string

URL_MAX_CHARS = 2000
TITLE_MAX_CHARS = 500


@dataclass(frozen=True)
class DocumentRecord:
    url: str
    title: str
    body: str
    line: int = field(default=0, compare=False)


def parse_document(obj: Any, line: int, limits: LineLimits) -> DocumentRecord:
    """Check one decoded WikiExtractor object, or raise ``RecordError``."""
    if not isinstance(obj, dict):
        raise RecordError(line, "(json)", f"expected an object, got {json_kind(obj)}")
    url = check_printable(required_string(obj, "url", line).strip(), line, "url")
    if len(url) > URL_MAX_CHARS:
        raise RecordError(line, "url", f"is {len(url)} characters, over {URL_MAX_CHARS}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise RecordError(line, "url", f"not an http(s) URL: {url[:100]!r}")
    title = required_string(obj, "title", line).strip()
    if len(title) > TITLE_MAX_CHARS:
        raise RecordError(line, "title", f"is {len(title)} characters, over {TITLE_MAX_CHARS}")
    body = required_string(obj, "text", line).strip()
    return DocumentRecord(url=url, title=title, body=body, line=line)
