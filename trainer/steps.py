"""A research step as dataset sources record it and ``trainer.formats`` renders it; a module of its
own, with no import, so that what reads sources (the web process's forms) loads no tokenizer."""

from __future__ import annotations

from typing import NamedTuple


class Step(NamedTuple):
    """One research step: the query and the tool result it got (empty strings where none)."""

    query: str
    title: str
    url: str
    snippet: str
