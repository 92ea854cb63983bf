"""The platform as an MCP server at /mcp (streamable HTTP, the mcp SDK's server side).

An MCP client (Claude Code, the MCP inspector, Hive) connects with
`Authorization: Bearer <api key>` and sees the tools that key may use, each
named `<server>__<tool>`; `tools/call` goes through tools.registry.call_tool
(permission, schema, caps, the call log) like every other tool call. A tool
the key may not use answers exactly as one that does not exist.

It is a plain ASGI app that config/asgi.py routes /mcp to, in front of
Django: the SDK needs the raw ASGI request. Around the SDK it does what the
ledger middleware does for the rest of the API: authenticate (401), refuse a
key without any tool permission (403), and leave exactly one Usage row
(endpoint `mcp`) per authenticated HTTP request, whatever the SDK answered.

Stateless mode, one session manager per request: no session lives between
requests, so any gateway process behind the load balancer serves any request
(no sticky sessions), nothing leaks between callers, and the manager's task
group lives exactly as long as the request (no ASGI lifespan needed; daphne
sends none). The SDK answers plain JSON rather than an SSE stream: our tools
send no progress notifications, and a JSON answer is a complete request the
ledger can close. The price: no server-to-client requests (sampling,
elicitation), which these tools do not use.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl

import mcp_types as types
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from accounts.snapshot import KeyInfo
from api.auth import SECRET_PARAMS
from api.errors import envelope, internal_error
from budgets import sweeper
from gateway import pipeline, tool_asks
from gateway.call import Call, new_request_id
from gateway.config import config_cache
from gateway.errors import GatewayError, InvalidRequest, NotFound, PermissionDenied
from gateway.recording import usage_record
from gateway.routes import caller_names_check
from tools import registry
from tools.types import ToolContext, ToolResult, ToolSpec

log = logging.getLogger("api.mcp")

PATHS = ("/mcp", "/mcp/")
ENDPOINT = "mcp"
SCOPE_KEY = "ep.mcp"  # where the authenticated caller waits for the SDK's handlers


def is_mcp_path(path: str) -> bool:
    return path in PATHS


@dataclass(frozen=True, slots=True)
class McpCaller:
    key: KeyInfo
    request_id: str
    run_id: str
    persona: str | None


# -- the MCP handlers ---------------------------------------------------------------------


def _caller(ctx: ServerRequestContext) -> McpCaller:
    return ctx.request.scope[SCOPE_KEY]


def _tool(spec: ToolSpec) -> types.Tool:
    return types.Tool(name=spec.qualified_name, description=spec.description, input_schema=spec.input_schema)


async def _tools_of(caller: McpCaller) -> list[ToolSpec]:
    return await registry.available_tools(caller.key, caller.persona)


async def list_tools(ctx: ServerRequestContext, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[_tool(spec) for spec in await _tools_of(_caller(ctx))])


async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
    caller = _caller(ctx)
    context = ToolContext(key=caller.key, request_id=caller.request_id, run_id=caller.run_id,
                          persona=caller.persona or "", source="mcp",
                          ask=tool_asks.asker(caller.key, run_id=caller.run_id))
    result = await registry.call_tool(params.name, params.arguments or {}, context,
                                      allowed=await _tools_of(caller))
    return _call_result(result)


def _call_result(result: ToolResult) -> types.CallToolResult:
    structured = result.structured if isinstance(result.structured, dict) else None
    meta = {"ep/error_code": result.error_code} if result.error_code else None
    return types.CallToolResult(content=[types.TextContent(text=result.content)], structured_content=structured,
                                is_error=result.is_error, _meta=meta)


SERVER = Server("execution-platform", version="1.0",
                instructions="The Execution Platform's tools for this API key, each named <server>__<tool>.",
                on_list_tools=list_tools, on_call_tool=call_tool)


# -- the HTTP face around it --------------------------------------------------------------


async def app(scope: dict, receive, send) -> None:
    """The ASGI app for /mcp."""
    request_id = new_request_id()
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    if not _host_allowed(headers.get("host", "")):
        await _send_all(send, _error_messages(InvalidRequest("Invalid Host header.", code="invalid_host"),
                                              request_id))
        return
    sweeper.ensure_started()
    try:
        call = await pipeline.call_open(_bearer(headers.get("authorization", "")) or None, endpoint=ENDPOINT,
                                        request_id=request_id)
    except GatewayError as error:  # 401: no row, as on every API path (there is no key to bill)
        await _send_all(send, _error_messages(error, request_id))
        return
    try:
        messages = await _answer(call, scope, receive, headers)
    except BaseException:  # cancelled: the client went away; its request still gets its row
        call.mark_cancelled()
        await asyncio.shield(usage_record(call))
        raise
    # The row is written before the answer leaves, as the ledger middleware does
    # for the rest of the API: a client that has its answer finds its row.
    _file_outcome(call, messages[0]["status"])
    await usage_record(call)
    await _send_all(send, messages)


async def _answer(call: Call, scope: dict, receive, headers: dict[str, str]) -> list[dict]:
    """The whole HTTP answer, as ASGI messages: the SDK's, or the envelope of a refusal."""
    try:
        caller = await _admitted(call, scope, headers)
        return await _served({**scope, SCOPE_KEY: caller}, receive, call.request_id)
    except GatewayError as error:
        call.fail(error)
        return _error_messages(error, call.request_id)
    except Exception:  # a bug: the envelope and the row all the same
        log.exception("unhandled error in /mcp")
        error = internal_error()
        call.fail(error)
        return _error_messages(error, call.request_id)


async def _admitted(call: Call, scope: dict, headers: dict[str, str]) -> McpCaller:
    """Who may go on to the SDK; raises the refusal (400, 403, 404, 405) otherwise."""
    if scope["method"] != "POST":
        # Stateless: there is no session to delete, and no server-initiated
        # messages to stream on a GET; the spec lets a server answer 405 to both.
        raise GatewayError(f"{scope['method']} is not allowed on /mcp; it answers POST (MCP streamable HTTP, "
                           "stateless).", status=405, code="method_not_allowed", headers={"Allow": "POST"})
    _refuse_key_in_query(scope)
    run_id, persona = headers.get("x-ep-run-id", ""), headers.get("x-persona") or None
    caller_names_check(run_id=run_id, persona_header=persona)
    if persona is not None:
        await _persona_check(persona)
    if not await sync_to_async(_has_any_tool_permission)(call.key):
        raise PermissionDenied("This API key may not use any tool: an operator grants tools to its team "
                               "(Tools > Grants in the dashboard).", code="no_tool_permission")
    return McpCaller(call.key, call.request_id, run_id, persona)


async def _persona_check(persona: str) -> None:
    known = (await config_cache.snapshot()).personas
    if persona not in known:
        raise NotFound(f"Unknown persona '{persona}' (X-Persona). Known personas: {', '.join(sorted(known)) or 'none'}.",
                       code="unknown_persona", param="X-Persona")


def _has_any_tool_permission(key: KeyInfo) -> bool:
    """A grant for the key's team with at least one pattern, not emptied by the key's own list."""
    team_patterns, key_patterns = registry.grants_of(key)
    return bool(team_patterns) and (key_patterns is None or bool(key_patterns))


async def _served(scope: dict, receive, request_id: str) -> list[dict]:
    """The SDK's answer, held back (a JSON answer: small and complete) so the
    Usage row is written before it leaves; our request id on its headers."""
    messages: list[dict] = []

    async def hold(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []),
                                              (b"x-request-id", request_id.encode())]}
        messages.append(message)

    manager = StreamableHTTPSessionManager(app=SERVER, stateless=True, json_response=True,
                                           max_request_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    async with manager.run():
        await manager.handle_request(scope, receive, hold)
    if not messages:
        raise RuntimeError("the MCP SDK sent no answer")
    return messages


def _file_outcome(call: Call, status: int) -> None:
    call.http_status = status
    if status >= 400 and call.status == "ok":
        call.status = "refused" if status < 500 else "error"
        call.error_code = call.error_code or f"http_{status}"


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _refuse_key_in_query(scope: dict) -> None:
    names = {name.lower() for name, _ in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                                  keep_blank_values=True)}
    if names & SECRET_PARAMS:
        raise InvalidRequest("API keys in the URL are refused: send 'Authorization: Bearer <key>' instead, and "
                             "treat the key that was in the URL as leaked.", code="key_in_query_string")


def _host_allowed(host: str) -> bool:
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return bool(domain) and validate_host(domain, allowed)


def _error_messages(error: GatewayError, request_id: str) -> list[dict]:
    body = json.dumps(envelope(error, request_id), separators=(",", ":")).encode()
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode()),
                                          (b"x-request-id", request_id.encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    if error.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="execution-platform"'))
    return [{"type": "http.response.start", "status": error.status, "headers": headers},
            {"type": "http.response.body", "body": body}]


async def _send_all(send, messages: list[dict]) -> None:
    for message in messages:
        await send(message)
