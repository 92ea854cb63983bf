"""current_time and calculator: facts a model gets wrong on its own."""

from __future__ import annotations

import ast
import math
import operator
from datetime import UTC, datetime
from typing import Any

from tools.servers.builtin import builtin_tool
from tools.types import ToolContext, ToolError

MAX_EXPRESSION = 500
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096  # a result past this is refused: 9**9**9 must not eat the server

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
FUNCTIONS = {"abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "log": math.log,
             "log10": math.log10, "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan,
             "floor": math.floor, "ceil": math.ceil}
CONSTANTS = {"pi": math.pi, "e": math.e}


@builtin_tool("current_time", "The current date and time in UTC (ISO 8601).")
async def current_time(arguments: dict[str, Any], ctx: ToolContext, server) -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@builtin_tool(
    "calculator",
    "Evaluate an arithmetic expression exactly as written: numbers, + - * / // % **, parentheses, "
    f"the constants pi and e and the functions {', '.join(FUNCTIONS)}. Example: '(17.5 * 3) / sqrt(2)'.",
    {"expression": {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION,
                    "description": "The expression, e.g. '2 ** 10 - 24'."}},
    required=("expression",),
)
async def calculator(arguments: dict[str, Any], ctx: ToolContext, server) -> str:
    return str(evaluate(arguments["expression"]))


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; ToolError for anything else (no eval, no names but ours)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ToolError(f"'{expression}' is not an arithmetic expression.", code="invalid_arguments") from None
    try:
        value = _value(tree.body)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError, RecursionError) as exc:
        raise ToolError(f"Cannot evaluate '{expression}': {exc}.", code="invalid_arguments") from None
    return value


def _value(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponents above {MAX_EXPONENT} are refused")
        return _bounded(BINARY[type(node.op)](left, right))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
            and not node.keywords):
        return _bounded(FUNCTIONS[node.func.id](*(_value(arg) for arg in node.args)))
    raise ValueError(f"'{ast.unparse(node)}' is not allowed (numbers, operators and the listed functions only)")


def _bounded(value: Any) -> int | float:
    if isinstance(value, complex):
        raise ValueError("the result is a complex number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"the result has more than {MAX_INT_BITS} bits")
    return value
