"""A fake MCP tool server over stdio, the mcp SDK's server side: run it as
`python tests/fakes/mcp_stdio_server.py` (or `python -m tests.fakes.mcp_stdio_server`
from the repository root).

Same tools as the HTTP fake (tests/fakes/mcp_http_server.py), plus `env`: it
answers with the value of the environment variable `name` it was started with
(or "<unset>"), so a test proves the server's configured (encrypted) env reaches
the process and the gateway's own secrets do not. `pid` answers with its process
id (a kept session answers from one process).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by path: make `tests.fakes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio  # noqa: E402
import mcp_types as types  # noqa: E402
from mcp.server.stdio import stdio_server  # noqa: E402

from tests.fakes.mcp_http_server import FAKE_TOOLS, build_server, run_fake_tool  # noqa: E402

STDIO_TOOLS = {
    **FAKE_TOOLS,
    "env": ("The value of one environment variable of this server process.",
            {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
    "pid": ("This server's process id.", {"type": "object", "properties": {}}),
}


async def main() -> None:
    server = build_server("fake-mcp-stdio", STDIO_TOOLS)

    async def with_env(ctx, params: types.CallToolRequestParams):
        if params.name == "env":
            name = (params.arguments or {}).get("name", "")
            return types.CallToolResult(content=[types.TextContent(text=os.environ.get(name, "<unset>"))])
        if params.name == "pid":
            return types.CallToolResult(content=[types.TextContent(text=str(os.getpid()))])
        return await run_fake_tool(params.name, params.arguments or {})

    server.add_request_handler("tools/call", types.CallToolRequestParams, with_env)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
