"""OpenAI Responses API request schema and its conversion to providers.types.

Only the client-facing wire lives here; api/openai_responses.py renders
answers and events and serves the endpoints.

The conversion goes through the Chat Completions request (api/openai_compat):
a Responses request is rewritten as the chat request it means and converted
by the same `to_chat_request`, so both formats reach the pipeline identically
(developer messages, tool calls, `strict`, tool_choice checks).

Choices worth knowing:
- Input items are normalized first (ids given, string content as parts); the
  normalized items are what `input_items` lists and what a stored response
  keeps, so a follow-up rebuilds exactly the conversation the model saw.
- `reasoning` items in the input are dropped: we never produce them, and they
  mean something only to the OpenAI model that made them.
- Built-in tools (web_search, file_search, ...), file inputs and parameters
  with no equivalent on every route (background, conversation, prompt) are a
  400 naming the field, never silently dropped.
- Logprobs are asked for as OpenAI does (`include: ["message.output_text.logprobs"]`,
  `top_logprobs`), non-streaming only, like on chat; a route whose providers
  lack them refuses (the pipeline's capability check). Other `include` values
  name extra data we never produce (reasoning, search results): nothing to add.
- The ChatRequest says it came from this API (`api="responses"`), so the openai
  adapter can carry it to OpenAI's own /v1/responses (providers/adapters/openai_responses.py).
"""

from __future__ import annotations

import random
from typing import Any, Literal

import pydantic
from ninja import Field
from pydantic import ConfigDict

from api import openai_compat
from api.wire_model import WireModel
from gateway.call import Route
from gateway.errors import InvalidRequest
from gateway.tool_loop import McpServerAsk
from providers.types import ChatRequest

# How each provider kind takes a reasoning effort (ChatRequest.extra keys its
# adapter reads). Kinds not listed cannot, and a request asking is refused;
# demo simulates its answers and ignores it.
REASONING_KINDS = ("openai", "azure_openai", "gemini", "vertex_gemini", "demo")
GEMINI_THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
TEXT_TYPES = ("input_text", "output_text", "text")
LOGPROBS_INCLUDE = "message.output_text.logprobs"


class _Lenient(WireModel):
    # OpenAI adds fields often (status, annotations, cache hints...): ignore them.
    model_config = ConfigDict(extra="ignore")


class PartIn(_Lenient):
    type: str = Field(..., max_length=40)
    text: str | None = None
    image_url: str | None = Field(None, max_length=20_000_000)
    file_id: str | None = None
    detail: str | None = None
    refusal: str | None = None


class ItemIn(_Lenient):
    """Any input item; its `type` decides which fields it needs (checked in
    `normalize_input`, which names the item and field that is wrong)."""

    type: str | None = Field(None, max_length=40)
    id: str | None = Field(None, max_length=100)
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[PartIn] | None = None
    call_id: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=64)
    arguments: str | None = None
    output: str | list[PartIn] | None = None


class ToolIn(_Lenient):
    type: str = Field(..., max_length=40)
    name: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    # type "mcp": a tool server registered here, run on the platform (gateway/tool_loop.py).
    server_label: str | None = Field(None, max_length=40)
    server_url: str | None = Field(None, max_length=2000)
    server_description: str | None = None
    allowed_tools: list[str] | dict[str, Any] | None = None
    require_approval: str | dict[str, Any] | None = None
    # Read only to refuse them (see mcp_servers): never echoed, never sent anywhere.
    headers: dict[str, Any] | None = Field(None, exclude=True)
    authorization: str | None = Field(None, exclude=True)
    connector_id: str | None = None
    tunnel_id: str | None = None


class TextIn(_Lenient):
    format: dict[str, Any] | None = None


class ReasoningIn(_Lenient):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class ResponsesIn(_Lenient):
    model: str = Field(..., min_length=1, max_length=300)
    input: str | list[ItemIn] | None = None
    instructions: str | None = None
    previous_response_id: str | None = Field(None, max_length=64)
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextIn | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    reasoning: ReasoningIn | None = None
    metadata: dict[str, str] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    store: bool | None = None
    stream: bool = False
    user: str | None = None
    # Read only to refuse them by name (see refuse_unsupported).
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{random.getrandbits(96):024x}"


# -- refusals by name ------------------------------------------------------------------


def refuse_unsupported(body: ResponsesIn) -> None:
    unsupported = {
        "background": (body.background, "background responses are not supported; send the request and wait"),
        "conversation": (body.conversation, "conversations are not supported; chain with previous_response_id"),
        "prompt": (body.prompt, "stored prompts are not supported; send instructions and input"),
    }
    for param, (value, why) in unsupported.items():
        if value:
            raise InvalidRequest(f"{param}: {why}.", code="unsupported_parameter", param=param)
    if wants_logprobs(body) and body.stream:
        raise InvalidRequest("logprobs are returned for non-streaming requests only.",
                             code="logprobs_not_supported_for_streams", param="include")


def wants_logprobs(body: ResponsesIn) -> bool:
    return LOGPROBS_INCLUDE in (body.include or []) or body.top_logprobs is not None


def _unsupported_part(where: str, part: PartIn) -> InvalidRequest:
    return InvalidRequest(
        f"{where}: content parts of type '{part.type}' are not supported here; send input_text, or "
        "input_image with an image_url (https or a data: URL).", code="unsupported_content_type", param=where)


# -- input -> normalized items -----------------------------------------------------------


def _part(where: str, part: PartIn, role: str) -> dict:
    if part.type in TEXT_TYPES:
        if role == "assistant":
            return {"type": "output_text", "text": part.text or "", "annotations": []}
        return {"type": "input_text", "text": part.text or ""}
    if part.type == "refusal":
        return {"type": "refusal", "refusal": part.refusal or ""}
    if part.type == "input_image" and part.image_url:
        return {"type": "input_image", "image_url": part.image_url, "detail": part.detail or "auto"}
    raise _unsupported_part(where, part)


def _parts(where: str, content: str | list[PartIn] | None, role: str) -> list[dict]:
    if content is None:
        raise InvalidRequest(f"{where}: a message needs content.", param=where)
    if isinstance(content, str):
        content = [PartIn(type="input_text", text=content)]
    return [_part(f"{where}.{j}", part, role) for j, part in enumerate(content)]


def _required(where: str, item: ItemIn, *names: str) -> None:
    for name in names:
        if getattr(item, name) in (None, ""):
            raise InvalidRequest(f"{where}: a {item.type} item needs `{name}`.", param=f"{where}.{name}")


def _output_text(where: str, output: str | list[PartIn] | None) -> str:
    if isinstance(output, str):
        return output
    for j, part in enumerate(output or []):
        if part.type not in TEXT_TYPES:
            raise _unsupported_part(f"{where}.output.{j}", part)
    return "".join(part.text or "" for part in output or [])


def _item(where: str, item: ItemIn) -> dict | None:
    kind = item.type or ("message" if item.role else None)
    if kind == "message":
        if item.role is None:
            raise InvalidRequest(f"{where}: a message needs a role.", param=f"{where}.role")
        return {"id": item.id or new_id("msg"), "type": "message", "role": item.role, "status": "completed",
                "content": _parts(f"{where}.content", item.content, item.role)}
    if kind == "function_call":
        _required(where, item, "call_id", "name")
        return {"id": item.id or new_id("fc"), "type": "function_call", "call_id": item.call_id,
                "name": item.name, "arguments": item.arguments or "", "status": "completed"}
    if kind == "function_call_output":
        _required(where, item, "call_id")
        return {"id": item.id or new_id("fco"), "type": "function_call_output", "call_id": item.call_id,
                "output": _output_text(where, item.output), "status": "completed"}
    if kind in ("reasoning", "mcp_list_tools", "mcp_call"):  # what a tool loop did: done, not redone
        return None
    raise InvalidRequest(
        f"{where}: input items of type '{kind}' are not supported here; send messages, function_call and "
        "function_call_output items.", code="unsupported_input_item", param=f"{where}.type")


def normalize_input(value: str | list[ItemIn] | None) -> list[dict]:
    """The request's input as Responses items, each with an id."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [ItemIn(type="message", role="user", content=value)]
    items = [_item(f"input.{i}", item) for i, item in enumerate(value)]
    return [item for item in items if item is not None]


# -- normalized items -> a Chat Completions request --------------------------------------


def _chat_content(item: dict) -> str | list[dict]:
    parts = item["content"]
    if all(p["type"] != "input_image" for p in parts):
        return "".join(p.get("text") or p.get("refusal") or "" for p in parts)
    return [{"type": "image_url", "image_url": {"url": p["image_url"], "detail": p.get("detail")}}
            if p["type"] == "input_image" else {"type": "text", "text": p.get("text") or p.get("refusal") or ""}
            for p in parts]


def _chat_messages(items: list[dict]) -> list[dict]:
    messages: list[dict] = []
    for item in items:
        if item["type"] == "message":
            messages.append({"role": item["role"], "content": _chat_content(item)})
        elif item["type"] == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            # Parallel calls (and the text before them) are one assistant turn in chat form.
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item["type"] == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        # mcp_list_tools / mcp_call items of a previous response: the platform ran those tools, and
        # the answer they led to is its message; the model of this request is not shown them again.
    return messages


def _tools(tools: list[ToolIn] | None) -> list[dict] | None:
    if tools is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.type == "mcp":  # run here: mcp_servers
            continue
        if tool.type != "function" or not tool.name:
            raise InvalidRequest(
                f"tools.{i}: only function tools (type 'function' with a name) and mcp tools naming a tool "
                "server registered here are supported, "
                f"not '{tool.type}'.", code="unsupported_tool", param=f"tools.{i}.type")
        out.append({"type": "function", "function": {
            "name": tool.name, "description": tool.description or "", "parameters": tool.parameters,
            "strict": tool.strict}})
    return out


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...}.",
                         param="tool_choice")


def response_format(text: TextIn | None) -> dict | None:
    """text.format as chat's response_format: json_schema's fields move under `json_schema`."""
    fmt = text.format if text else None
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": {"name": "output", **schema}}
    raise InvalidRequest("text.format must be {'type': 'text'}, {'type': 'json_object'} or "
                         "{'type': 'json_schema', 'name': ..., 'schema': {...}}.", param="text.format")


def to_chat_request(body: ResponsesIn, items: list[dict]) -> ChatRequest:
    """The Responses request, with its whole conversation `items`, as a ChatRequest."""
    instructions = [{"role": "system", "content": body.instructions}] if body.instructions else []
    messages = instructions + _chat_messages(items)
    if not messages:
        raise InvalidRequest("input is empty: send a string or at least one item.", param="input")
    chat = {
        "model": body.model, "messages": messages, "tools": _tools(body.tools),
        "tool_choice": _tool_choice(body.tool_choice), "parallel_tool_calls": body.parallel_tool_calls,
        "temperature": body.temperature, "top_p": body.top_p, "max_completion_tokens": body.max_output_tokens,
        "response_format": response_format(body.text), "user": body.user,
        "logprobs": wants_logprobs(body) or None, "top_logprobs": body.top_logprobs,
    }
    try:
        chat_body = openai_compat.ChatCompletionIn.model_validate(chat)
    except pydantic.ValidationError as error:  # only what our own checks above let through
        first = error.errors()[0]
        raise InvalidRequest(f"Invalid request: {first['msg']}", param="input") from None
    request = openai_compat.to_chat_request(chat_body)
    request.api = "responses"
    return request


def reasoning_apply(request: ChatRequest, route: Route, reasoning: ReasoningIn | None) -> None:
    """Carry a reasoning effort to each provider kind in its own terms, or
    refuse it when a step of the route could not honour it (a fallback must
    not silently answer without the reasoning the caller asked for)."""
    if reasoning is None or reasoning.effort is None:
        return
    cannot = sorted({s.provider.kind for s in route.steps if s.provider.enabled} - set(REASONING_KINDS))
    if cannot:
        raise InvalidRequest(
            f"reasoning: the route '{route.label}' uses {', '.join(cannot)}, which cannot take a reasoning "
            "effort here; leave `reasoning` out or use a route on OpenAI or Gemini.",
            code="reasoning_not_supported", param="reasoning")
    request.extra["reasoning_effort"] = reasoning.effort
    request.extra["thinking_budget"] = GEMINI_THINKING_BUDGETS[reasoning.effort]


# -- `mcp` tools: tool servers registered here ------------------------------------------------


def mcp_servers(tools: list[ToolIn] | None) -> list[McpServerAsk]:
    """The request's `{"type": "mcp", ...}` tools, checked; the gateway checks the servers
    themselves (gateway/tool_loop.py `plan`). Approval flows are not offered: every tool
    here was approved by an operator and granted to the key, so `require_approval` may be
    left out or "never" (both run the tools); asking for approval is refused."""
    asks = []
    for i, tool in enumerate(tools or []):
        if tool.type != "mcp":
            continue
        where = f"tools.{i}"
        if not tool.server_label:
            raise InvalidRequest(f"{where}: an mcp tool needs server_label, the name of a tool server registered "
                                 "here.", param=f"{where}.server_label")
        for name in ("connector_id", "tunnel_id"):
            if getattr(tool, name):
                raise InvalidRequest(f"{where}.{name}: connectors and tunnels are not supported; name a tool "
                                     "server registered here in server_label.", code="unsupported_parameter",
                                     param=f"{where}.{name}")
        if tool.headers or tool.authorization:
            raise InvalidRequest(f"{where}: this gateway holds the credentials of the tool servers it reaches; "
                                 "send no headers or authorization.", code="mcp_credentials_not_accepted",
                                 param=f"{where}.authorization" if tool.authorization else f"{where}.headers")
        _approval_check(where, tool.require_approval)
        asks.append(McpServerAsk(tool.server_label, tool.server_url, _allowed(where, tool.allowed_tools)))
    return asks


def _approval_check(where: str, value: str | dict[str, Any] | None) -> None:
    always = value == "always" or (isinstance(value, dict) and bool(value.get("always")))
    if always or (isinstance(value, str) and value != "never"):
        raise InvalidRequest(f"{where}.require_approval: approval requests are not supported here; tools on "
                             "this gateway are approved by its operators and granted to your key, so send "
                             "\"never\" (or leave it out).", code="mcp_approval_not_supported",
                             param=f"{where}.require_approval")


def _allowed(where: str, value: list[str] | dict[str, Any] | None) -> tuple[str, ...] | None:
    if value is None or isinstance(value, list):
        return None if value is None else tuple(value)
    if value.get("read_only") is not None:
        raise InvalidRequest(f"{where}.allowed_tools: the read_only filter is not supported; list tool_names.",
                             code="unsupported_parameter", param=f"{where}.allowed_tools")
    names = value.get("tool_names")
    return tuple(names) if isinstance(names, list) else None
