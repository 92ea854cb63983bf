"""POST /v1/responses (OpenAI's Responses API), GET / DELETE /v1/responses/{id}
and GET /v1/responses/{id}/input_items.

A Responses request becomes a ChatRequest (api/openai_responses_wire.py) and
goes through the same pipeline as chat: persona routing, fallback, budgets,
one Usage row, idempotency, run tags. This module renders the answer as a
`response` object, or as the typed event stream the openai SDK's
`responses.stream` reads, and keeps answers (`store`, default true) per team
for retrieval and `previous_response_id` (gateway/stored_responses.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema

from api import idempotency
from api.anthropic_compat import sse
from api.auth import ApiKeyAuth, begin_options
from api.errors import CHAT, KEYED, error_response, error_responses, sse_doc
from api.openai_responses_wire import (
    ResponsesIn,
    mcp_servers,
    new_id,
    normalize_input,
    reasoning_apply,
    refuse_unsupported,
    to_chat_request,
)
from api.responses import json_response, served_by_headers, streaming_response
from gateway import pipeline, tool_loop
from gateway.call import Call, Route
from gateway.errors import InvalidRequest, NotFound
from gateway.relay import relay
from gateway.stored_responses import (
    Stored,
    stored_response_delete,
    stored_response_get,
    stored_response_save,
)
from gateway.tool_loop import ToolLoop, ToolProgress, ToolRun, loop_headers
from providers.types import ChatRequest, ChatResult, StreamEvent, ToolCall, Usage
from tools.types import ToolSpec

log = logging.getLogger("api.openai_responses")
router = Router(tags=["OpenAI compatible"], auth=ApiKeyAuth())

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
RESPONSE_ID = re.compile(r"resp_[0-9a-zA-Z_-]{1,60}")  # the ids Echo makes: "resp_" + the request id's tail

# -- normalized -> Responses objects ------------------------------------------------------


def usage_json(usage: Usage) -> dict:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                 "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def text_part(text: str, logprobs: list[dict] | None = None) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def message_item(item_id: str, text: str | None, status: str = "completed", logprobs: list[dict] | None = None
                 ) -> dict:
    """An assistant message; `text` None while it is streaming (its part is added then)."""
    content = [text_part(text, logprobs)] if text is not None else []
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def function_call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict:
    return {"id": item_id, "type": "function_call", "call_id": call.id, "name": call.name,
            "arguments": call.arguments, "status": status}


def mcp_list_tools_item(server_label: str, tools: list[ToolSpec] | None) -> dict:
    """The tools of one `mcp` server of the request (None while it is being listed)."""
    listed = [{"name": t.name, "description": t.description, "input_schema": t.input_schema, "annotations": None}
              for t in tools or []]
    return {"id": new_id("mcpl"), "type": "mcp_list_tools", "server_label": server_label, "tools": listed,
            "error": None}


def mcp_call_item(item_id: str, run: ToolRun) -> dict:
    """A tool call the platform ran, as OpenAI shows a remote MCP server's call."""
    failed = run.status not in ("ok", "running")
    error = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": run.output}]}
    return {"id": item_id, "type": "mcp_call", "server_label": run.server, "name": run.tool,
            "arguments": run.arguments, "output": None if failed or run.status == "running" else run.output,
            "error": error if failed else None, "approval_request_id": None,
            "status": {"running": "in_progress", "ok": "completed"}.get(run.status, "failed")}


def loop_output_items(loop: ToolLoop) -> list[dict]:
    """A tool loop's answer: the servers listed, then each step's text and tool calls in order."""
    items = [mcp_list_tools_item(label, tools) for label, tools in loop.listed]
    for part in loop.transcript:
        if isinstance(part, ToolRun):
            items.append(mcp_call_item(new_id("mcp"), part))
        elif part:
            items.append(message_item(new_id("msg"), part))
    return items


def output_items(result: ChatResult) -> list[dict]:
    logprobs = (result.logprobs or {}).get("content")
    items = ([message_item(new_id("msg"), result.content or "", logprobs=logprobs)]
             if result.content or not result.tool_calls else [])
    return items + [function_call_item(new_id("fc"), call) for call in result.tool_calls]


class Echo:
    """What a response object repeats of its request, and the ids it carries."""

    def __init__(self, call: Call, body: ResponsesIn) -> None:
        self.call, self.body = call, body
        self.id = "resp_" + call.request_id[4:]
        self.created_at = int(time.time())

    def response(self, *, status: str, output: list[dict], usage: Usage | None = None,
                 finish_reason: str | None = None, error: dict | None = None) -> dict:
        body = self.body
        reason = INCOMPLETE_REASONS.get(finish_reason or "")
        if status == "completed" and reason:
            status = "incomplete"
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
            "error": error, "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "model": self.call.model or body.model, "output": output,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": body.reasoning.effort if body.reasoning else None, "summary": None},
            "store": body.store is not False, "temperature": body.temperature,
            "text": {"format": (body.text.format if body.text and body.text.format else {"type": "text"})},
            "tool_choice": body.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "top_p": body.top_p, "top_logprobs": body.top_logprobs, "truncation": "disabled", "user": body.user,
            "metadata": body.metadata or {}, "usage": usage_json(usage) if usage is not None else None,
        }

    def answer(self, result: ChatResult, loop: ToolLoop | None = None) -> dict:
        output = output_items(result) if loop is None else loop_output_items(loop)
        if result.finish_reason in INCOMPLETE_REASONS:
            for item in output:
                item["status"] = "incomplete"
        return self.response(status="completed", output=output, usage=result.usage,
                             finish_reason=result.finish_reason)


# -- the event stream ----------------------------------------------------------------------


class EventWriter:
    """StreamEvents as the Responses API's typed SSE events, numbered in order.

    One message item is open while text arrives; each tool call is its own
    function_call item, open until the answer ends (providers may interleave
    the arguments of parallel calls). `final` is the completed response once
    the stream is done, for the caller to store before the client sees it."""

    def __init__(self, echo: Echo, loop: ToolLoop | None = None) -> None:
        self.echo = echo
        self.loop = loop
        self.tool_items: dict[str, int] = {}  # a tool loop's call id -> output_index
        self.sequence = 0
        self.items: list[dict] = []  # by output_index; open ones grow as events arrive
        self.text_index: int | None = None  # the open message item
        self.calls: dict[int, int] = {}  # the provider's tool call index -> output_index
        self.final: dict | None = None

    def _emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(kind, data)

    def opening(self) -> bytes:
        response = self.echo.response(status="in_progress", output=[])
        out = self._emit("response.created", response=response) + self._emit("response.in_progress",
                                                                              response=response)
        for label, tools in self.loop.listed if self.loop is not None else ():
            out += self._listed(label, tools)
        return out

    def event(self, event: StreamEvent | ToolProgress) -> bytes:
        if isinstance(event, ToolProgress):
            return self._tool_started(event.run) if event.type == "tool_started" else self._tool_finished(event.run)
        if event.type == "delta" and event.text:
            return self._text(event.text)
        if event.type == "tool_call":
            return self._tool(event)
        if event.type == "done":
            return self._done(event)
        if event.type == "error":
            return self.failure()
        return b""  # usage: sent once, in response.completed

    def _add(self, item: dict) -> tuple[int, bytes]:
        self.items.append(item)
        index = len(self.items) - 1
        return index, self._emit("response.output_item.added", output_index=index, item=dict(item))

    def _text(self, text: str) -> bytes:
        out = b""
        if self.text_index is None:
            self.text_index, out = self._add(message_item(new_id("msg"), None, "in_progress"))
            part = text_part("")
            self.items[self.text_index]["content"] = [part]
            out += self._emit("response.content_part.added", item_id=self.items[self.text_index]["id"],
                              output_index=self.text_index, content_index=0, part=dict(part))
        item = self.items[self.text_index]
        item["content"][0]["text"] += text
        return out + self._emit("response.output_text.delta", item_id=item["id"], output_index=self.text_index,
                                content_index=0, delta=text, logprobs=[])

    def _listed(self, label: str, tools: list[ToolSpec]) -> bytes:
        index, out = self._add(mcp_list_tools_item(label, None))
        item = self.items[index]
        out += self._emit("response.mcp_list_tools.in_progress", item_id=item["id"], output_index=index)
        item["tools"] = mcp_list_tools_item(label, tools)["tools"]
        return (out + self._emit("response.mcp_list_tools.completed", item_id=item["id"], output_index=index)
                + self._emit("response.output_item.done", output_index=index, item=item))

    def _tool_started(self, run: ToolRun) -> bytes:
        out = self._close_text()  # the text after the tool call is a message item of its own
        index, added = self._add(mcp_call_item(new_id("mcp"), run))
        self.tool_items[run.call_id] = index
        item_id = self.items[index]["id"]
        return (out + added
                + self._emit("response.mcp_call_arguments.done", item_id=item_id, output_index=index,
                             arguments=run.arguments)
                + self._emit("response.mcp_call.in_progress", item_id=item_id, output_index=index))

    def _tool_finished(self, run: ToolRun) -> bytes:
        index = self.tool_items[run.call_id]
        item = self.items[index] = mcp_call_item(self.items[index]["id"], run)
        kind = "response.mcp_call.completed" if item["status"] == "completed" else "response.mcp_call.failed"
        return (self._emit(kind, item_id=item["id"], output_index=index)
                + self._emit("response.output_item.done", output_index=index, item=item))

    def _close_text(self) -> bytes:
        if self.text_index is None:
            return b""
        index, self.text_index = self.text_index, None
        item = self.items[index]
        item["status"] = "completed"
        part = item["content"][0]
        return (self._emit("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                           text=part["text"], logprobs=[])
                + self._emit("response.content_part.done", item_id=item["id"], output_index=index,
                             content_index=0, part=part)
                + self._emit("response.output_item.done", output_index=index, item=item))

    def _tool(self, event: StreamEvent) -> bytes:
        out = b""
        if event.index not in self.calls:
            out = self._close_text()
            call = ToolCall(event.tool_call_id or new_id("call"), event.name or "", "")
            self.calls[event.index], added = self._add(function_call_item(new_id("fc"), call, "in_progress"))
            out += added
        index = self.calls[event.index]
        if event.arguments:
            self.items[index]["arguments"] += event.arguments
            out += self._emit("response.function_call_arguments.delta", item_id=self.items[index]["id"],
                              output_index=index, delta=event.arguments)
        return out

    def _close_calls(self, status: str) -> bytes:
        out = b""
        for index in self.calls.values():
            item = self.items[index]
            item["status"] = status
            out += self._emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                              name=item["name"], arguments=item["arguments"])
            out += self._emit("response.output_item.done", output_index=index, item=item)
        self.calls = {}
        return out

    def _done(self, event: StreamEvent) -> bytes:
        out = self._close_text() + self._close_calls("completed")
        self.final = self.echo.response(status="completed", output=self.items, usage=self.echo.call.usage,
                                        finish_reason=event.finish_reason)
        kind = "response.incomplete" if self.final["status"] == "incomplete" else "response.completed"
        return out + self._emit(kind, response=self.final)

    def failure(self) -> bytes:
        # In band, after the answer started: an `error` event, then the failed response.
        call = self.echo.call
        message = call.error_message or "provider failed"
        code = "rate_limit_exceeded" if call.http_status == 429 else "server_error"
        failed = self.echo.response(status="failed", output=self.items, usage=call.usage,
                                    error={"code": code, "message": message})
        return (self._emit("error", code=call.error_code or "provider_error", message=message, param=None)
                + self._emit("response.failed", response=failed))


# -- the conversation ----------------------------------------------------------------------


async def _previous_items(call: Call, previous_id: str | None) -> list[dict]:
    """What the previous response saw and answered: its input items, then its output."""
    if not previous_id:
        return []
    if not RESPONSE_ID.fullmatch(previous_id):
        raise NotFound("Previous response not found: that is not an id this gateway makes.",
                       code="previous_response_not_found", param="previous_response_id")
    previous = await stored_response_get(response_id=previous_id, team_id=call.key.team_id)
    if previous is None:
        raise NotFound(f"Previous response '{previous_id}' not found: it was not stored (store: false), was "
                       "deleted, expired, or belongs to another team.", code="previous_response_not_found",
                       param="previous_response_id")
    return previous.input_items + previous.body.get("output", [])


async def _store(echo: Echo, items: list[dict], response: dict) -> None:
    """Keep the answer for GET and previous_response_id; a database down loses
    only that (the answer is already decided, and the client gets it)."""
    if echo.body.store is False:
        return
    try:
        await stored_response_save(response_id=echo.id, team_id=echo.call.key.team_id,
                                   previous_response_id=echo.body.previous_response_id or "",
                                   input_items=items, body=response)
    except DatabaseError:
        log.exception("could not store response %s", echo.id)


async def _begin(request: HttpRequest, call: Call, body: ResponsesIn, chat_request: ChatRequest) -> Route:
    metadata = body.metadata or {}
    try:
        route = await pipeline.begin(call, chat_request, model=body.model, **begin_options(
            request, run_id=metadata.get("run_id"), step=metadata.get("step")))
    except InvalidRequest as error:
        if error.param == "max_tokens":  # the pipeline's name for it; this API calls it max_output_tokens
            error.param, error.message = "max_output_tokens", error.message.replace("max_tokens", "max_output_tokens")
        raise
    reasoning_apply(chat_request, route, body.reasoning)
    return route


# -- endpoints ------------------------------------------------------------------------------


@router.post("/responses", summary="Create a model response (OpenAI Responses API)",
             response={200: dict, **error_responses(*CHAT)},
             openapi_extra=sse_doc("A response; or with `stream: true`, the Responses API's typed events."))
async def create_response(request: HttpRequest, body: ResponsesIn):
    call: Call = request.ep_call
    call.stream = body.stream
    refuse_unsupported(body)
    servers = mcp_servers(body.tools)
    items = await _previous_items(call, body.previous_response_id) + normalize_input(body.input)
    chat_request = to_chat_request(body, items)
    route = await _begin(request, call, body, chat_request)
    loop = await tool_loop.plan(call, route, chat_request, servers)
    echo = Echo(call, body)
    if body.stream:
        if request.headers.get(idempotency.HEADER):
            raise InvalidRequest("Idempotency-Key is supported for non-streaming requests only.",
                                 code="idempotency_not_supported_for_streams", param=idempotency.HEADER)
        events, first = await tool_loop.stream_start(call, route, chat_request, loop)
        writer = EventWriter(echo, loop)
        stream = relay(call, events, writer.event, first=first, opening=writer.opening(),
                       on_failure=lambda error: writer.failure())
        return streaming_response(call, _stored_when_done(stream, writer, items),
                                  headers=served_by_headers(call) | loop_headers(loop))

    async def complete() -> HttpResponse:
        result = await tool_loop.answer(call, route, chat_request, loop)
        answer = echo.answer(result, loop)
        await _store(echo, items, answer)
        headers = served_by_headers(call) | {"X-EP-Cost-USD": f"{call.cost:.8f}"} | loop_headers(loop)
        return json_response(answer, call.request_id, headers=headers)

    return await idempotency.idempotent(request, complete, on_error=lambda e: error_response(request, e))


async def _stored_when_done(stream: AsyncIterator[bytes], writer: EventWriter, items: list[dict]
                            ) -> AsyncIterator[bytes]:
    """The relayed stream, with the response stored before the client reads its
    completion (so a follow-up sent at once finds it)."""
    stored = False
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            if writer.final is not None and not stored:
                stored = True
                await _store(writer.echo, items, writer.final)
            yield chunk


def _not_found(response_id: str) -> NotFound:
    if not RESPONSE_ID.fullmatch(response_id):  # never echoed: it may hold what no row can (a NUL)
        return NotFound("No response with that id: it is not an id this gateway makes.", code="response_not_found",
                        param="response_id")
    return NotFound(f"No response with id '{response_id}'.", code="response_not_found", param="response_id")


async def _stored(request: HttpRequest, response_id: str, endpoint: str) -> Stored:
    call: Call = request.ep_call
    call.endpoint = endpoint  # not the path: it holds the id
    stored = (await stored_response_get(response_id=response_id, team_id=call.key.team_id)
              if RESPONSE_ID.fullmatch(response_id) else None)
    if stored is None:
        raise _not_found(response_id)
    return stored


@router.get("/responses/{response_id}", summary="Get a stored response", response={200: dict, **error_responses(
    *KEYED, 404)})
async def get_response(request: HttpRequest, response_id: str, stream: bool = False):
    if stream:
        raise InvalidRequest("Replaying a stored response as a stream is not supported; omit `stream`.",
                             code="unsupported_parameter", param="stream")
    stored = await _stored(request, response_id, "responses.get")
    return json_response(stored.body, request.ep_call.request_id)


@router.delete("/responses/{response_id}", summary="Delete a stored response",
               response={200: dict, **error_responses(*KEYED, 404)})
async def delete_response(request: HttpRequest, response_id: str):
    call: Call = request.ep_call
    call.endpoint = "responses.delete"
    if not RESPONSE_ID.fullmatch(response_id) or not await stored_response_delete(response_id=response_id,
                                                                                  team_id=call.key.team_id):
        raise _not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True}, call.request_id)


class InputItemsQuery(Schema):
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


def _page(items: list[dict], query: InputItemsQuery) -> list[dict]:
    ordered = items if query.order == "asc" else items[::-1]
    ids = [item["id"] for item in ordered]
    for cursor, name in ((query.after, "after"), (query.before, "before")):
        if cursor is not None and cursor not in ids:
            raise InvalidRequest(f"{name}: no input item with id '{cursor}' in this response.", param=name)
    start = ids.index(query.after) + 1 if query.after else 0
    end = ids.index(query.before) if query.before else len(ids)
    return ordered[start:end]


@router.get("/responses/{response_id}/input_items", summary="List a stored response's input items",
            response={200: dict, **error_responses(*KEYED, 404)})
async def list_input_items(request: HttpRequest, response_id: str, query: Query[InputItemsQuery]):
    if not 1 <= query.limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100.", param="limit")
    stored = await _stored(request, response_id, "responses.input_items")
    page = _page(stored.input_items, query)
    data = page[: query.limit]
    body = {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(page) > len(data)}
    return json_response(body, request.ep_call.request_id)
