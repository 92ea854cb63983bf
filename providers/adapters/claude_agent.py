"""claude_agent: the Claude CLI driven through claude-agent-sdk.

Each call runs one CLI subprocess (ClaudeSDKClient); there is no connection to pool,
so the "long-lived client" is just the adapter's fixed option set.

Safety on a server: by default the CLI gets no built-in tools (`--tools ""`),
dangerous ones are also listed in `--disallowedTools`, no filesystem settings
are read (`--setting-sources=`), no other MCP config is loaded
(`--strict-mcp-config`), it runs in a fresh empty temporary directory, and every
permission prompt is denied by `can_use_tool`. A route step can opt into tools
with `params.allowed_tools` (plus `permission_mode`, `cwd`, `max_turns`).

Client-declared tools (function calling) are exposed as an in-process SDK MCP
server named "client" whose handlers never execute anything. A PreToolUse hook
answers "defer" for them, which makes the CLI stop the run and report the call
(ResultMessage.deferred_tool_use) together with its usage and cost; the calls
themselves are taken from the assistant's ToolUseBlocks, so several calls in
one turn all come back. `can_use_tool` denies with interrupt as a backstop.

The conversation is rendered into one prompt: in one-shot mode the CLI has no
way to take earlier assistant turns or tool results as structured input, and
streaming several user messages would make it answer each one.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import Any, ClassVar

from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    HookMatcher,
    PermissionResultDeny,
    RateLimitEvent,
    ResultMessage,
    SdkMcpTool,
    TextBlock,
    ToolUseBlock,
    create_sdk_mcp_server,
)
from claude_agent_sdk import StreamEvent as SDKStreamEvent

from providers.adapters.base import Adapter, AdapterConfig
from providers.types import (
    Capabilities,
    ChatRequest,
    ChatResult,
    ErrorKind,
    FinishReason,
    Message,
    ProviderError,
    StreamEvent,
    ToolCall,
    Usage,
)

CLIENT_SERVER = "client"
TOOL_PREFIX = f"mcp__{CLIENT_SERVER}__"
# Built-in tools that touch the machine; listed even though `--tools ""` already
# removes them, so a CLI that ignored --tools would still refuse them.
DANGEROUS_TOOLS = [
    "Bash", "BashOutput", "KillShell", "Edit", "MultiEdit", "Write", "NotebookEdit",
    "Read", "Glob", "Grep", "WebFetch", "WebSearch", "Task", "Agent", "Skill", "SlashCommand",
]
_STATUS_RE = re.compile(r"API Error:\s*(\d{3})")


class ClaudeAgentAdapter(Adapter):
    kind: ClassVar[str] = "claude_agent"
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True,
        tools=True,
        parallel_tool_calls=True,
        images=False,
        system_prompt=True,
        reports_cost=True,
        notes=(
            "Runs the Claude CLI; the conversation is sent as one rendered prompt; "
            "temperature/top_p/stop/seed are not supported by the CLI; cost is the CLI's own report."
        ),
    )

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__(config)
        # Token-level deltas need the CLI's partial messages; on by default.
        self._partial = bool(config.options.get("partial_messages", True))

    # -- public API ------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatResult:
        text: list[str] = []
        calls: list[ToolCall] = []
        usage, finish, meta = Usage(), "stop", {}
        async with aclosing(self._events(request, partial=False, meta=meta)) as events:
            async for event in events:
                if event.type == "delta":
                    text.append(event.text)
                elif event.type == "tool_call":
                    calls.append(ToolCall(id=event.tool_call_id or "", name=event.name or "", arguments=event.arguments))
                elif event.type == "usage" and event.usage is not None:
                    usage = event.usage
                elif event.type == "error" and event.error is not None:
                    raise event.error
                elif event.type == "done":
                    finish = event.finish_reason or "stop"
        return ChatResult(
            content="".join(text) if text or not calls else None,
            tool_calls=calls,
            finish_reason=finish,
            usage=usage,
            model=meta.get("model") or request.model,
            provider_request_id=meta.get("session_id"),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        # aclosing: closing this generator early closes query(), which ends the CLI.
        async with aclosing(self._events(request, partial=self._partial, meta={})) as events:
            async for event in events:
                yield event

    # -- one CLI run -----------------------------------------------------------

    async def _events(self, request: ChatRequest, *, partial: bool, meta: dict) -> AsyncIterator[StreamEvent]:
        """Normalized events of one CLI run; always ends in `done` or `error`.

        ClaudeSDKClient rather than query(): query() does not close its inner
        generator when closed early (PEP 533), which leaves the CLI running
        until garbage collection; disconnect() ends it deterministically.
        """
        workdir = None if request.extra.get("cwd") else tempfile.mkdtemp(prefix="ep-claude-")
        state = StreamState(partial, meta, self._error)
        prompt, options = request_to_wire(request, self.config, partial=partial, workdir=workdir)
        client = ClaudeSDKClient(options)
        try:
            await self._timed(client.connect(prompt))
            messages = client.receive_messages()
            while not state.finished:
                message = await self._timed(anext(messages, None))
                if message is None:
                    raise self._error("unavailable", "the CLI ended without a result")
                for event in state.events(message):
                    yield event
        except ProviderError as error:
            yield StreamEvent(type="error", error=error)
        finally:
            await client.disconnect()
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    async def _timed(self, awaitable: Awaitable[Any]) -> Any:
        """Await one step of the CLI run; SDK failures become ProviderErrors.

        The timeout is per step (like an HTTP read timeout), so a long answer
        that keeps streaming is not cut, while a silent CLI is.
        """
        try:
            async with asyncio.timeout(self.config.read_timeout):
                return await awaitable
        except Exception as exc:  # noqa: BLE001 - the SDK raises bare Exception for control-protocol failures
            raise error_from_sdk(exc, read_timeout=self.config.read_timeout, provider=self.config.name,
                                 secret=self.config.credential) from None

    def _error(self, kind: ErrorKind, message: str, **kwargs: Any) -> ProviderError:
        return _provider_error(kind, message, provider=self.config.name, secret=self.config.credential,
                               **kwargs)


# -- response ------------------------------------------------------------------


class StreamState:
    """SDK messages of one run -> normalized StreamEvents; `finished` once the result came."""

    def __init__(self, partial: bool, meta: dict, make_error) -> None:
        self.partial = partial
        self.meta = meta
        self.make_error = make_error
        self.calls: dict[str, int] = {}  # tool_use id -> index
        self.retry_after: float | None = None
        self.finished = False

    def events(self, message: Any) -> list[StreamEvent]:
        if isinstance(message, SDKStreamEvent):
            return self._partial_text(message)
        if isinstance(message, AssistantMessage) and message.parent_tool_use_id is None:
            self.meta["model"] = message.model
            return self._assistant(message)
        if isinstance(message, RateLimitEvent):
            info = message.rate_limit_info
            if info.status == "rejected" and info.resets_at:
                self.retry_after = max(0.0, float(round(info.resets_at - time.time())))
            return []
        if isinstance(message, ResultMessage):
            self.finished = True
            self.meta["session_id"] = message.session_id
            return self._result(message)
        return []

    def _partial_text(self, message: SDKStreamEvent) -> list[StreamEvent]:
        event = message.event
        if message.parent_tool_use_id is None and event.get("type") == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [StreamEvent(type="delta", text=delta["text"])]
        return []

    def _assistant(self, message: AssistantMessage) -> list[StreamEvent]:
        events = []
        for block in message.content:
            if isinstance(block, TextBlock) and not self.partial and block.text:
                events.append(StreamEvent(type="delta", text=block.text))
            elif isinstance(block, ToolUseBlock) and block.name.startswith(TOOL_PREFIX):
                events.append(self._tool_call(block.id, block.name, block.input))
        return [e for e in events if e is not None]

    def _tool_call(self, call_id: str, name: str, arguments: dict) -> StreamEvent | None:
        if call_id in self.calls:
            return None
        self.calls[call_id] = index = len(self.calls)
        return StreamEvent(
            type="tool_call",
            index=index,
            tool_call_id=call_id,
            name=name.removeprefix(TOOL_PREFIX),
            arguments=json.dumps(arguments),
        )

    def _result(self, result: ResultMessage) -> list[StreamEvent]:
        deferred = result.deferred_tool_use
        events = []
        if deferred is not None and deferred.name.startswith(TOOL_PREFIX):
            events.append(self._tool_call(deferred.id, deferred.name, deferred.input))
        # A run stopped on a client tool call may report an aborted/error
        # result; the calls are the answer, so it is not an error.
        if not self.calls and (result.is_error or result.subtype.startswith("error")):
            return [StreamEvent(type="error", error=self._result_error(result))]
        finish = finish_reason_from_wire(result.stop_reason, has_tool_calls=bool(self.calls))
        events += [
            StreamEvent(type="usage", usage=usage_from_wire(result)),
            StreamEvent(type="done", finish_reason=finish),
        ]
        return [e for e in events if e is not None]

    def _result_error(self, result: ResultMessage) -> ProviderError:
        text = "; ".join(result.errors or []) or (result.result or "") or result.subtype
        kind, status = error_kind_from_wire(text, result.api_error_status)
        retry_after = self.retry_after if kind == "rate_limited" else None
        return self.make_error(kind, f"Claude CLI: {text}", status=status, retry_after=retry_after)


def finish_reason_from_wire(stop_reason: str | None, has_tool_calls: bool = False) -> FinishReason:
    if has_tool_calls:
        return "tool_calls"
    return "length" if stop_reason == "max_tokens" else "stop"


def usage_from_wire(result: ResultMessage) -> Usage:
    raw = result.usage or {}
    cache_read = int(raw.get("cache_read_input_tokens") or 0)
    cache_write = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0) + cache_read + cache_write,
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
        reported_cost_usd=result.total_cost_usd,
    )


# -- errors --------------------------------------------------------------------


def error_from_sdk(
    exc: BaseException, *, read_timeout: float, provider: str, secret: str = ""
) -> ProviderError:
    """A failure of one step of the CLI run (connect, next message) as a ProviderError."""
    if isinstance(exc, TimeoutError):
        kind, message = "timeout", f"the CLI sent nothing for {read_timeout}s"
    elif isinstance(exc, ClaudeSDKError):
        # CLINotFoundError, CLIConnectionError, ProcessError (exit != 0),
        # CLIJSONDecodeError, MessageParseError: the CLI is not usable now.
        kind, message = "unavailable", f"{type(exc).__name__}: {exc}"
    else:  # the SDK raises bare Exception for control-protocol failures
        kind, message = "unavailable", f"Claude CLI control protocol: {exc}"
    return _provider_error(kind, message, provider=provider, secret=secret)


def _provider_error(
    kind: ErrorKind, message: str, *, provider: str, secret: str, **kwargs: Any
) -> ProviderError:
    # The CLI's text could in theory echo its environment; scrub the key.
    if secret:
        message = message.replace(secret, "***")
    return ProviderError(kind, message[:500], provider=provider, **kwargs)


def error_kind_from_wire(text: str, status: int | None) -> tuple[ErrorKind, int | None]:
    """The taxonomy kind for an error result the CLI reported, by its status and text."""
    lowered = text.lower()
    if status is None and (match := _STATUS_RE.search(text)):
        status = int(match.group(1))
    if "prompt is too long" in lowered or "context length" in lowered or "context window" in lowered:
        return "context_length", status
    if status == 429 or "rate_limit" in lowered or "rate limit" in lowered:
        return "rate_limited", status
    if (status is not None and status >= 500) or "overloaded" in lowered or "api_error" in lowered:
        return "unavailable", status
    if status in (401, 403) or "authentication" in lowered or "api key" in lowered or "/login" in lowered:
        return "auth", status
    return "bad_request", status


# -- request -------------------------------------------------------------------


def request_to_wire(
    request: ChatRequest, config: AdapterConfig, *, partial: bool, workdir: str | None
) -> tuple[str, ClaudeAgentOptions]:
    """(prompt, options) for one ClaudeSDKClient run of this request."""
    extra = request.extra
    allowed = [str(t) for t in extra.get("allowed_tools") or []]
    servers, hooks = {}, None
    if request.tools and request.tool_choice != "none":
        servers = {CLIENT_SERVER: _client_tool_server(request)}
        hooks = {"PreToolUse": [HookMatcher(matcher=f"{TOOL_PREFIX}.*", hooks=[_defer_client_tool])]}
    options = ClaudeAgentOptions(
        cli_path=config.options.get("cli_path") or None,
        model=request.model or None,
        system_prompt=_system_prompt(request),
        # No built-in tools unless the route step allows some by name.
        tools=sorted({t.split("(", 1)[0] for t in allowed if not t.startswith("mcp__")}),
        allowed_tools=allowed,
        disallowed_tools=[t for t in DANGEROUS_TOOLS if t not in {a.split("(", 1)[0] for a in allowed}],
        permission_mode=extra.get("permission_mode") if allowed else "default",
        can_use_tool=_deny_tool,
        mcp_servers=servers,
        strict_mcp_config=True,
        hooks=hooks,
        setting_sources=[],
        cwd=extra.get("cwd") or workdir,
        max_turns=extra.get("max_turns") or (None if allowed else 1),
        include_partial_messages=partial,
        # The prompt holds client text: never expand @path mentions or slash commands in it.
        verbatim_prompts=True,
        env=_env(request, config),
    )
    return messages_to_wire(request.conversation()), options


def _env(request: ChatRequest, config: AdapterConfig) -> dict[str, str]:
    env: dict[str, str] = {}
    if config.credential:
        env["ANTHROPIC_API_KEY"] = config.credential
    if config.base_url:
        env["ANTHROPIC_BASE_URL"] = config.base_url
    if request.max_tokens:
        # The SDK has no max_tokens option; the CLI reads this variable.
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(request.max_tokens)
    return env


def messages_to_wire(conversation: list[Message]) -> str:
    """The conversation as one prompt; a lone user message goes as it is."""
    if len(conversation) == 1 and conversation[0].role == "user":
        return _text(conversation[0])
    lines = ["The conversation so far, oldest first; each part starts with a '=== ... ===' line.", ""]
    for message in conversation:
        lines += _render_turn(message)
    lines += ["=== end of conversation ===", "Reply as the assistant to the last part above."]
    return "\n".join(lines)


def _render_turn(message: Message) -> list[str]:
    if message.role == "tool":
        return [f"=== result of tool call {message.tool_call_id} ===", _text(message), ""]
    lines = [f"=== {message.role} ===", _text(message), ""] if _text(message) else []
    for call in message.tool_calls:
        lines += [f"=== assistant called tool {call.name} (call id {call.id}) with arguments ===", call.arguments, ""]
    return lines


def _text(message: Message) -> str:
    if isinstance(message.content, list) and any(p.type == "image" for p in message.content):
        return message.text() + "\n[image omitted: not supported by this provider]"
    return message.text()


def _system_prompt(request: ChatRequest) -> str | None:
    prompt = request.system_prompt()
    choice = request.tool_choice
    if request.tools and choice not in (None, "auto", "none"):
        # The CLI has no tool_choice; ask for it in words.
        need = "one of the client tools" if choice == "required" else f"the tool {TOOL_PREFIX}{choice}"
        prompt = ((prompt + "\n\n") if prompt else "") + f"You must answer by calling {need}."
    return prompt


def _client_tool_server(request: ChatRequest):
    async def never_run(arguments: dict[str, Any]) -> dict[str, Any]:
        # Reached only if something allowed the call past the hook: the gateway's
        # client runs its tools, never this process.
        return {"content": [{"type": "text", "text": "This tool is run by the client."}], "is_error": True}

    tools = [SdkMcpTool(name=t.name, description=t.description, input_schema=t.parameters, handler=never_run)
             for t in request.tools]
    return create_sdk_mcp_server(CLIENT_SERVER, tools=tools)


async def _defer_client_tool(hook_input: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
    """PreToolUse for client tools: stop the run and hand the call back."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "defer",
            "permissionDecisionReason": "the gateway's client runs this tool",
        }
    }


async def _deny_tool(name: str, tool_input: dict[str, Any], context: Any) -> PermissionResultDeny:
    # Nothing runs on the server unless a route step allowed it by name (those
    # never reach this callback). A client tool that got here ends the run.
    return PermissionResultDeny(message="Tools are not allowed here.", interrupt=name.startswith(TOOL_PREFIX))
