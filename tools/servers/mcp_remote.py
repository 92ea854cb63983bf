"""Operators' MCP tool servers: kind `http` (streamable HTTP) and kind `stdio`
(a local command), through the official mcp SDK's Client.

Kept sessions, not a connection per call. Measured on this machine against the
fakes in tests/fakes: a fresh streamable-HTTP connection costs ~20 ms before the
call (~4 ms) and a fresh stdio server ~450 ms (a Python process starting), against
~1.5 ms (HTTP) and ~6 ms (stdio) per call on a kept session. So each process keeps
one session per server (and per event loop: an SDK session belongs to the loop
that opened it), shared by concurrent calls, closed after EP idle time or when
the server's settings change, and reopened on the next call after a transport
failure. Listing tools (refresh, the health check) always opens a fresh
connection: it is rare, and it should prove the server can be reached now.

Isolation: every server has its own session and its own connect lock, connects
are bounded by `connect_timeout` (options, default 10 s, never longer than the
call's timeout) and calls by the registry's timeout, so a server that hangs or is
down only costs the callers of that server.

Secrets (`secrets_encrypted`): a JSON object, HTTP headers for `http`, env vars for
`stdio`. A stdio server gets only the SDK's minimal environment (HOME, LOGNAME,
PATH, SHELL, TERM, USER) plus its configured variables: never the gateway's own
(EP_SECRET_KEY, DATABASE_URL, provider keys). Its stderr is discarded, so what it
prints never lands in the gateway's logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import weakref
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from tools.server_config import server_secrets, server_url_validate
from tools.servers import ToolDef
from tools.types import ToolContext, ToolResult

DEFAULT_CONNECT_TIMEOUT = 10.0
IDLE_SECONDS = 300.0  # a kept session unused this long is closed (a stdio server's process ends)
LIST_PAGES_MAX = 50  # a server whose tools/list never ends cannot hang a refresh


def _fingerprint(server) -> str:
    """Changes when anything that decides the connection changes: the kept session is then replaced."""
    text = json.dumps([server.kind, server.url, server.command, server.secrets_encrypted, server.options],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _connect_timeout(server, limit: float | None = None) -> float:
    value = float((server.options or {}).get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)
    return min(value, limit) if limit else value


# -- opening a connection ------------------------------------------------------------------


async def _open(server, stack: AsyncExitStack) -> Client:
    """Enter a connected, handshaken Client on `stack` (closed when the stack is)."""
    secrets = server_secrets(server)
    if server.kind == "http":
        # Checked again at connect time: the name may resolve elsewhere than when it was saved.
        await asyncio.to_thread(server_url_validate, server.url)
        http = await stack.enter_async_context(create_mcp_http_client(headers=secrets or None))
        transport = streamable_http_client(server.url, http_client=http)
    elif server.kind == "stdio":
        argv = list(server.command or [])
        if not argv:
            raise ValueError("a stdio tool server needs a command")
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=secrets,
                                       cwd=(server.options or {}).get("cwd") or None)
        errlog = stack.enter_context(open(os.devnull, "w"))  # noqa: SIM115 - closed by the stack
        transport = stdio_client(params, errlog=errlog)
    else:
        raise ValueError(f"not an MCP server kind: {server.kind}")
    return await stack.enter_async_context(Client(transport, cache=None,
                                                  client_info=types.Implementation(name="execution-platform",
                                                                                   version="1")))


class _KeptSession:
    """One open Client, owned by a task of its own (an SDK session must be closed
    by the task that opened it); any task of the same loop may call through it."""

    def __init__(self, server, fingerprint: str) -> None:
        self.server = server
        self.fingerprint = fingerprint
        self.client: Client | None = None
        self.last_used = time.monotonic()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A failure nobody waits for any more (the caller timed out) is still read, so asyncio
        # does not log it as never retrieved.
        self._ready.add_done_callback(lambda ready: ready.cancelled() or ready.exception())
        self._closing = asyncio.Event()
        self._task = asyncio.create_task(self._own(), name=f"mcp-session-{server.name}")

    @property
    def alive(self) -> bool:
        return not self._task.done() and not self._closing.is_set()

    async def _own(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                self.client = await _open(self.server, stack)
                self._ready.set_result(None)
                while not self._closing.is_set():
                    try:
                        await asyncio.wait_for(self._closing.wait(), timeout=IDLE_SECONDS / 4)
                    except TimeoutError:
                        if time.monotonic() - self.last_used > IDLE_SECONDS:
                            break
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the connection
            if not self._ready.done():
                self._ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
        finally:
            self.client = None
            self._closing.set()

    async def connected(self, timeout: float) -> Client:
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self.close()
            raise ConnectionError(f"could not connect within {timeout:g} s") from None
        if self.client is None:
            raise ConnectionError("the connection closed")
        self.last_used = time.monotonic()
        return self.client

    async def ended(self) -> None:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(self._task), 10)

    def close(self) -> None:
        self._closing.set()
        if not self._ready.done():
            self._task.cancel()  # still connecting: stop it


@dataclass
class _Pool:
    sessions: dict[int, _KeptSession] = field(default_factory=dict)
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)


# This process's kept sessions, per event loop (gone with it), by server id.
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = _Pool()
    return pool


async def _session(server, connect_timeout: float) -> Client:
    pool = _pool()
    lock = pool.locks.setdefault(server.pk, asyncio.Lock())
    async with lock:  # one connect per server at a time; other servers never wait on it
        kept = pool.sessions.get(server.pk)
        if kept is not None and (not kept.alive or kept.fingerprint != _fingerprint(server)):
            kept.close()
            kept = None
        if kept is None:
            kept = pool.sessions[server.pk] = _KeptSession(server, _fingerprint(server))
        try:
            return await kept.connected(connect_timeout)
        except Exception:
            pool.sessions.pop(server.pk, None)
            raise


def _drop_session(server) -> None:
    kept = _pool().sessions.pop(server.pk, None)
    if kept is not None:
        kept.close()


async def close_sessions() -> None:
    """Close this loop's kept sessions and wait for them to end (tests; a process shutting down)."""
    pool = _pool()
    sessions = list(pool.sessions.values())
    pool.sessions.clear()
    for kept in sessions:
        kept.close()
    await asyncio.gather(*(kept.ended() for kept in sessions))


# -- results -------------------------------------------------------------------------------


def _block_text(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.EmbeddedResource):
        return getattr(block.resource, "text", None) or f"[resource {block.resource.uri}]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link {block.uri}]"
    mime = getattr(block, "mime_type", "")
    return f"[{getattr(block, 'type', 'content')}{': ' + mime if mime else ''}, not shown]"


def result_from_mcp(result: types.CallToolResult) -> ToolResult:
    """An MCP tool result as ours: text blocks joined; structured content kept (and as
    text when there is no text); isError is a tool error the model may read."""
    text = "\n".join(_block_text(b) for b in result.content)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content)
    if result.is_error:
        return ToolResult(text or "The tool reported an error.", is_error=True, error_code="tool_error",
                          structured=result.structured_content)
    return ToolResult(text, structured=result.structured_content)


_MCP_ERRORS = {types.INVALID_PARAMS: "refused the arguments", types.METHOD_NOT_FOUND: "does not know the method"}


def result_from_mcp_error(name: str, error: MCPError) -> ToolResult:
    """A protocol-level error, sanitised: its code, never the server's own message (which may
    carry internals, or text aimed at the model)."""
    what = _MCP_ERRORS.get(error.code, "answered with an error")
    return ToolResult(f"The tool '{name}' {what} (MCP error {error.code}).", is_error=True,
                      error_code="tool_error")


# -- the connection ------------------------------------------------------------------------


class McpRemoteServer:
    def __init__(self, server) -> None:
        self.server = server

    async def list_tools(self) -> list[ToolDef]:
        # One deadline for connecting and listing, in this task (an SDK session must
        # be closed by the task that opened it, so no wait_for around the opening).
        async with asyncio.timeout(_connect_timeout(self.server) + float(self.server.timeout_seconds)):
            async with AsyncExitStack() as stack:
                return await self._all_tools(await _open(self.server, stack))

    async def _all_tools(self, client: Client) -> list[ToolDef]:
        tools: list[ToolDef] = []
        cursor = None
        for _ in range(LIST_PAGES_MAX):
            page = await client.list_tools(cursor=cursor)
            tools += [ToolDef(t.name, t.description or "", dict(t.input_schema or {})) for t in page.tools]
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext,
                        timeout: float) -> ToolResult:
        client = await _session(self.server, _connect_timeout(self.server, timeout))
        try:
            result = await client.call_tool(name, arguments, read_timeout_seconds=timeout)
        except MCPError as error:
            if error.code == types.REQUEST_TIMEOUT:
                raise TimeoutError() from None
            if error.code == types.CONNECTION_CLOSED:  # the SDK's word for a dead transport
                _drop_session(self.server)
                raise ConnectionError("the connection to the tool server closed") from None
            return result_from_mcp_error(f"{self.server.name}__{name}", error)
        except (asyncio.CancelledError, TimeoutError):
            raise  # the registry's timeout: the session itself is fine
        except Exception:
            _drop_session(self.server)  # a transport failure: reconnect on the next call
            raise
        return result_from_mcp(result)
