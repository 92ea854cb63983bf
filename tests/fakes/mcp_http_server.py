"""A fake MCP tool server over streamable HTTP: the mcp SDK's own server side,
served by uvicorn in a thread on 127.0.0.1, so the gateway's real mcp client
runs against the real wire protocol.

Tools (`FAKE_TOOLS`, shared with tests/fakes/mcp_stdio_server.py):
echo, add, slow (sleeps), fails (isError), crash (raises), big (a large text).
A test changes what the server lists at runtime through `fake.tools`
(e.g. a new description: tool pinning), makes every request hang with
`fake.hang = True`, and reads what was called in `fake.calls` and which
headers came with the requests in `fake.headers`.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server

from tests.fakes.common import _free_port

_NUMBERS = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"]}

# name -> (description, input schema). Deep-copied per fake so tests may change their own.
FAKE_TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "echo": ("Echo the text back.", {"type": "object", "properties": {"text": {"type": "string"}},
                                     "required": ["text"]}),
    "add": ("Add two numbers.", _NUMBERS),
    "slow": ("Sleep for `seconds`, then answer.", {"type": "object", "properties": {
        "seconds": {"type": "number"}}, "required": ["seconds"]}),
    "fails": ("Always answers with a tool error.", {"type": "object", "properties": {}}),
    "crash": ("Raises inside the server.", {"type": "object", "properties": {}}),
    "big": ("Answers with `size` characters.", {"type": "object", "properties": {"size": {"type": "integer"}}}),
}


async def run_fake_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    """What each fake tool answers."""
    if name == "echo":
        return _text(str(arguments.get("text", "")))
    if name == "add":
        total = arguments["a"] + arguments["b"]
        return types.CallToolResult(content=[types.TextContent(text=str(total))],
                                    structured_content={"sum": total})
    if name == "slow":
        await asyncio.sleep(float(arguments.get("seconds", 1)))
        return _text("done sleeping")
    if name == "fails":
        return types.CallToolResult(content=[types.TextContent(text="the fake tool failed on purpose")],
                                    is_error=True)
    if name == "crash":
        raise RuntimeError("the fake tool crashed on purpose with internal detail /srv/secret/path")
    if name == "big":
        return _text("x" * int(arguments.get("size", 200_000)))
    raise ValueError(f"no tool {name}")


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)])


def build_server(name: str, tools: dict[str, tuple[str, dict[str, Any]]], calls: list | None = None) -> Server:
    """An MCP server listing `tools` as they are at each request (so a test may change them)."""

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name=n, description=d, input_schema=s)
                                            for n, (d, s) in tools.items()])

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        if calls is not None:
            calls.append((params.name, dict(params.arguments or {})))
        return await run_fake_tool(params.name, params.arguments or {})

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


class FakeMCPHttpServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.tools: dict[str, tuple[str, dict[str, Any]]] = copy.deepcopy(FAKE_TOOLS)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.hang = False
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def reset(self) -> None:
        self.tools.clear()
        self.tools.update(copy.deepcopy(FAKE_TOOLS))
        self.calls.clear()
        self.headers.clear()
        self.hang = False

    def _app(self):
        inner = build_server("fake-mcp", self.tools, self.calls).streamable_http_app()

        async def app(scope, receive, send):
            if scope["type"] == "http":
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
                while self.hang:  # a server that accepted the connection and never answers
                    await asyncio.sleep(0.05)
            await inner(scope, receive, send)

        return app

    def start(self) -> FakeMCPHttpServer:
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="FakeMCPHttpServer")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("FakeMCPHttpServer did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.hang = False
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
