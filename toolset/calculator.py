"""The calculator tool: safe arithmetic on one input string. Pure: no Django import.

Only numbers, ``+ - * / // % **``, unary minus and plus, and parentheses are evaluated, from the
parsed ``ast`` (never ``eval``): names, attributes, calls, subscripts and everything else make
the input "not arithmetic", and the tool returns ``[]``. Input length, exponents and the size of
every intermediate integer are bounded so one query cannot tie up a worker.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

MAX_INPUT_CHARS = 200
MAX_EXPONENT = 1000
# About 3,000 decimal digits: well under Python's int-to-str limit (4,300 digits).
MAX_INT_BITS = 10_000

Number = int | float


class NotArithmetic(ValueError):
    """The input is not (bounded, well-defined) arithmetic."""


def calculate(query: str) -> list[str]:
    """``["7856"]`` for ``"135+7721"``; ``[]`` for anything that is not arithmetic or has no value."""
    text = query.strip().rstrip("=?").strip()
    if not text or len(text) > MAX_INPUT_CHARS:
        return []
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return []
    # A bare number is not a calculation: echoing it would add noise to every numeric query.
    if not any(isinstance(node, ast.BinOp) for node in ast.walk(tree)):
        return []
    try:
        value = _evaluate(tree.body)
    except (NotArithmetic, ZeroDivisionError, OverflowError):
        return []
    return [format_number(value)]


def format_number(value: Number) -> str:
    """Integers as they are; integral floats without ``.0``; other floats by ``repr``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value) if isinstance(value, int) else repr(value)


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        # bool is an int subclass; True/False are names to a reader, not numbers.
        if type(node.value) not in (int, float):
            raise NotArithmetic(f"not a number: {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        apply = _BINARY.get(type(node.op))
        if apply is None:
            raise NotArithmetic(f"operator {type(node.op).__name__} is not allowed")
        return _checked(apply(_evaluate(node.left), _evaluate(node.right)))
    raise NotArithmetic(f"{type(node).__name__} is not arithmetic")


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise NotArithmetic(f"exponent {exponent} is over {MAX_EXPONENT}")
    # Refuse before computing: 9**999 is cheap, (9**999)**999 is not.
    big = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if big and base.bit_length() * exponent > MAX_INT_BITS + exponent:
        raise NotArithmetic("result too large")
    result = base**exponent
    if isinstance(result, complex):  # a negative base to a fractional power
        raise NotArithmetic("complex result")
    return result


def _multiply(left: Number, right: Number) -> Number:
    ints = isinstance(left, int) and isinstance(right, int)
    if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
        raise NotArithmetic("result too large")
    return left * right


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}


def _checked(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise NotArithmetic("not a finite number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise NotArithmetic("result too large")
    return value
