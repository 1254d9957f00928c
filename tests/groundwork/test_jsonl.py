"""The importers' shared skeleton: errors collected up to ``MAX_REPORTED_ERRORS``, then the app's
refusal with the errors by line; a key given on two lines is an error naming both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from groundwork.jsonl import MAX_REPORTED_ERRORS, ImportErrors, ImportRefused, RecordError, unique_records


class Refused(ImportRefused):
    pass


@dataclass
class Record:
    id: str
    line: int


def test_a_key_twice_is_an_error_naming_the_first_line() -> None:
    errors = ImportErrors(Refused)
    records = [Record("a", 1), RecordError(2, "(json)", "not valid JSON"), Record("b", 3), Record("a", 4)]

    found = unique_records(records, key=lambda r: r.id, field="id", errors=errors)

    assert list(found) == ["a", "b"]
    assert [e.as_dict() for e in errors] == [
        {"line": 2, "field": "(json)", "message": "not valid JSON"},
        {"line": 4, "field": "id", "message": "duplicate id 'a' (also line 1)"},
    ]
    with pytest.raises(Refused) as refused:
        errors.refuse_if_any()
    assert [e.line for e in refused.value.errors] == [2, 4]


def test_collecting_stops_at_the_most_reported_errors() -> None:
    errors = ImportErrors(Refused)
    read = []

    def lines() -> Iterator[RecordError]:
        for line in range(1, 1000):
            read.append(line)
            yield RecordError(line, "(json)", "not valid JSON")

    with pytest.raises(Refused) as refused:
        unique_records(lines(), key=lambda r: r.id, field="id", errors=errors)

    assert len(refused.value.errors) == MAX_REPORTED_ERRORS
    assert len(read) == MAX_REPORTED_ERRORS  # the rest of the file is not read
    assert "(stopped counting)" in str(refused.value)
    ImportErrors(Refused).refuse_if_any()  # no error, no refusal
