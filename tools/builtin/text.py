"""json_query and text_diff: exact work on text a model would otherwise approximate."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from tools.servers.builtin import builtin_tool
from tools.types import ToolContext, ToolError, ToolResult

MAX_TEXT = 200_000
# One step of a path: .name, ["name"], [3] or [*].
STEP = re.compile(r'\.?([A-Za-z_$][\w$-]*)|\[(\d+|-\d+|\*)\]|\["((?:[^"\\]|\\.)*)"\]')


@builtin_tool(
    "json_query",
    "Pick values out of a JSON document by path: 'items[0].name', 'items[*].price', 'meta[\"content-type\"]'. "
    "An empty path returns the whole document. [*] maps over every element of an array or value of an object.",
    {"json": {"type": "string", "maxLength": MAX_TEXT, "description": "The JSON document, as text."},
     "path": {"type": "string", "maxLength": 500, "description": "The path, e.g. 'data.users[*].email'."}},
    required=("json", "path"),
)
async def json_query(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    try:
        document = json.loads(arguments["json"])
    except json.JSONDecodeError as exc:
        raise ToolError(f"'json' is not valid JSON ({exc.msg} at position {exc.pos}).",
                        code="invalid_arguments") from None
    value = query(document, arguments["path"])
    return ToolResult(json.dumps(value, ensure_ascii=False), structured={"value": value})


def query(document: Any, path: str) -> Any:
    steps, position = [], 0
    while position < len(path):
        match = STEP.match(path, position)
        if match is None or match.end() == position:
            raise ToolError(f"Cannot read the path at position {position}: '{path[position:][:40]}'.",
                            code="invalid_arguments")
        name, index, quoted = match.groups()
        steps.append(name if name is not None else (json.loads(f'"{quoted}"') if quoted is not None else index))
        position = match.end()
    return _walk(document, steps, path)


def _walk(value: Any, steps: list[str], path: str) -> Any:
    for i, step in enumerate(steps):
        if step == "*":
            items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else None
            if items is None:
                raise ToolError(f"'{path}': [*] needs an array or an object.", code="invalid_arguments")
            return [_walk(item, steps[i + 1:], path) for item in items]
        value = _step(value, step, path)
    return value


def _step(value: Any, step: str, path: str) -> Any:
    if isinstance(value, list) and re.fullmatch(r"-?\d+", step):
        if -len(value) <= int(step) < len(value):
            return value[int(step)]
        raise ToolError(f"'{path}': index {step} is outside the array (length {len(value)}).",
                        code="not_found")
    if isinstance(value, dict) and step in value:
        return value[step]
    raise ToolError(f"'{path}': there is no '{step}' here.", code="not_found")


@builtin_tool(
    "text_diff",
    "A unified diff between two texts (what changed from 'before' to 'after'); empty when they are equal.",
    {"before": {"type": "string", "maxLength": MAX_TEXT}, "after": {"type": "string", "maxLength": MAX_TEXT},
     "context_lines": {"type": "integer", "minimum": 0, "maximum": 20, "default": 3,
                       "description": "Unchanged lines shown around each change."}},
    required=("before", "after"),
)
async def text_diff(arguments: dict[str, Any], ctx: ToolContext, server) -> str:
    lines = difflib.unified_diff(arguments["before"].splitlines(keepends=True),
                                 arguments["after"].splitlines(keepends=True), fromfile="before", tofile="after",
                                 n=arguments.get("context_lines", 3))
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
