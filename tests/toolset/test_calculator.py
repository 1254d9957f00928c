"""``toolset.calculator``: safe arithmetic, ``[]`` for everything else."""

from __future__ import annotations

import pytest

from toolset.calculator import MAX_INPUT_CHARS, calculate


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("135+7721", ["7856"]),
        ("  135 + 7721 = ", ["7856"]),
        ("-3 + 1", ["-2"]),
        ("-(2 + 3) * 4", ["-20"]),
        ("2 ** -2", ["0.25"]),
        ("7 / 2", ["3.5"]),
        ("6 / 3", ["2"]),  # an integral float has no trailing .0
        ("1.5 * 2", ["3"]),
        ("0.1 + 0.2", ["0.30000000000000004"]),
        ("7 // 2", ["3"]),
        ("7 % 3", ["1"]),
        ("2 ** 10", ["1024"]),
    ],
)
def test_arithmetic_is_computed(query: str, expected: list[str]) -> None:
    assert calculate(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "1/0",
        "1 // 0",
        "5 % 0",
        "0 ** -1",
        "2 ** 100000",  # exponent over the bound
        "(9 ** 999) ** 999",  # each exponent allowed, the result far too large
        "10 ** 1000 * 10 ** 1000 * 10 ** 1000 * 10 ** 1000",
        "10.0 ** 1000",  # float overflow
        "1e400 * 1",  # not a finite number
        "(-8) ** (1 / 3)",  # complex
        "hello world",
        "abc + 1",
        "__import__('os').system('true')",
        "(1).__class__",
        "abs(-1)",
        "[1, 2][0] + 1",
        "True + 1",
        "1j + 1",
        "'a' + 'b'",
        "1 << 10",
        "2 ^ 3",
        "1 < 2",
        "42",  # a bare number is not a calculation
        "",
        "How old is Rafael Nadal?",
    ],
)
def test_anything_else_gives_nothing(query: str) -> None:
    assert calculate(query) == []


def test_input_length_is_capped() -> None:
    near = "+".join(["1"] * (MAX_INPUT_CHARS // 2))  # 199 characters
    assert calculate(near) == [str(MAX_INPUT_CHARS // 2)]
    assert calculate(near + "+1") == []
