"""A fake Anthropic Messages API speaking the real wire format, for the `anthropic` SDK.

Serves POST /v1/messages (JSON and SSE streaming) and POST /v1/messages/count_tokens
on 127.0.0.1. Replies come from the script queue (tests/fakes/common.py); faults
reproduce what Anthropic really sends: its error envelope
`{"type": "error", "error": {"type", "message"}, "request_id"}`, a `retry-after`
header on 429s, 529 `overloaded_error`, mid-stream connection drops.

Anthropic's `usage.input_tokens` excludes cached tokens, so a FakeReply with
input_tokens=100, cached_tokens=60 is reported as input_tokens=40 plus
cache_read_input_tokens=60 -- the adapter must add them back.

Prompt caching as Anthropic does it: a request with `cache_control` breakpoints
has a cached prefix (tools, then system, then messages, up to the last block
marked), counted at ~4 characters a token (at most the reply's input_tokens
less one: those stay the prompt's whole size). The first time the fake sees a
prefix it reports it as `cache_creation_input_tokens`, later as
`cache_read_input_tokens`. A reply that scripts cached_tokens itself is left as it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from providers.adapters.base import AdapterConfig
from tests.fakes.common import FakeProviderServer, FakeReply, Fault, sse

# Anthropic's error `type` per HTTP status (docs: "HTTP errors").
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


class CutConnection(Exception):
    """Raised inside a streaming body so uvicorn drops the connection mid-answer."""


def _id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": _id("req_")}


class _EventStream(StreamingResponse):
    """A StreamingResponse that always closes its generator, so the fake notices a client leaving."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


class FakeAnthropicServer(FakeProviderServer):
    kind = "anthropic"
    model = "claude-sonnet-4-6"
    scriptable = True
    reports_reasoning_tokens = False
    provider_id = 4101  # stable, so adapter_config() maps to one cached adapter

    def __init__(self) -> None:
        super().__init__()
        # One entry per streamed answer: {"sent": events sent,
        # "outcome": "running" | "completed" | "closed" (the client left) | "cut"}
        self.streams: list[dict[str, Any]] = []
        self.prompt_cache: set[str] = set()  # the prefixes written to the prompt cache

    def reset(self) -> None:
        super().reset()
        self.streams.clear()
        self.prompt_cache.clear()

    def _prompt_cached(self, body: dict[str, Any], reply: FakeReply) -> FakeReply:
        """The reply with its usage as Anthropic's prompt cache would report it."""
        prefix = cached_prefix(body)
        if prefix is None or reply.cached_tokens or reply.cache_write_tokens or reply.input_tokens < 2:
            return reply
        tokens = min(max(1, len(prefix) // 4), reply.input_tokens - 1)
        digest = hashlib.sha256(prefix.encode()).hexdigest()
        if digest in self.prompt_cache:
            return dataclasses.replace(reply, cached_tokens=tokens)
        self.prompt_cache.add(digest)
        return dataclasses.replace(reply, cache_write_tokens=tokens)

    def adapter_config(self, credential: str = "sk-ant-test-fake", **overrides: Any) -> AdapterConfig:
        fields: dict[str, Any] = {
            "provider_id": self.provider_id,
            "name": "anthropic",
            "kind": "anthropic",
            "base_url": self.base_url,
            "credential": credential,
            "read_timeout": 10,
            "connect_timeout": 2,
        }
        fields.update(overrides)
        return AdapterConfig(**fields)

    def context_length_fault(self) -> Fault:
        # Verbatim shape of Anthropic's answer to an over-long prompt.
        return Fault(
            "status",
            status=400,
            error_type="invalid_request_error",
            message="prompt is too long: 215438 tokens > 200000 maximum",
        )

    # -- app ---------------------------------------------------------------------
    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        """GET /v1/models: Anthropic's list, one page."""
        self.record(request.url.path, dict(request.headers), None)
        if (refusal := self._check_headers(request)) is not None:
            return refusal
        data = [{"type": "model", "id": name, "display_name": name, "created_at": "2026-01-01T00:00:00Z"}
                for name in (self.model, "claude-haiku-4-5")]
        return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    async def _read(self, request: Request) -> tuple[Any, Response | None]:
        """Record the request; return (body, an error response if it must be refused)."""
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.record(request.url.path, dict(request.headers), body)
        refusal = self._check_headers(request)
        if refusal is None and not isinstance(body, dict):
            refusal = JSONResponse(error_body("invalid_request_error", "request body is not valid JSON"), 400)
        return body, refusal

    @staticmethod
    def _check_headers(request: Request) -> Response | None:
        # The real API takes the key as `x-api-key`; anthropic SDK 2.x sends it as
        # `Authorization: Bearer`, which the API also accepts. Either must be present.
        has_key = bool(request.headers.get("x-api-key"))
        auth = request.headers.get("authorization", "")
        has_bearer = auth.lower().startswith("bearer ") and bool(auth[7:].strip())
        if not (has_key or has_bearer):
            return JSONResponse(error_body("authentication_error", "x-api-key header is required"), 401)
        if not request.headers.get("anthropic-version"):
            return JSONResponse(
                error_body("invalid_request_error", "anthropic-version header is required"), 400
            )
        return None

    async def _count_tokens(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        text = json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
        return JSONResponse({"input_tokens": max(1, len(text) // 4)})

    async def _messages(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        return await self._respond(body)

    async def _respond(self, body: dict[str, Any]) -> Response:
        """The answer to one valid Messages request: the next script item, as JSON or SSE."""
        item = self.next_script()
        streaming = bool(body.get("stream"))
        model = body.get("model") or self.model
        if isinstance(item, Fault):
            return await self._fault(item, streaming, model)
        item = self._prompt_cached(body, item)
        if streaming:
            return self._sse(self._events(item, model))
        return _json(message_json(item, model))

    # -- faults ------------------------------------------------------------------
    async def _fault(self, fault: Fault, streaming: bool, model: str) -> Response:
        reply = fault.reply or FakeReply()
        if fault.kind == "status":
            return status_response(fault)
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return _json(message_json(reply, model))
        if fault.kind == "malformed":
            if streaming:
                return self._sse(_malformed_events())
            return Response(b'{"id": "msg_01', 200, media_type="application/json")
        if not streaming:  # cut / stall_stream on a plain request: a truncated or slow body
            return self._sse(_partial_json(fault, reply, model), media_type="application/json")
        return self._sse(self._events(reply, model, fault))

    def _sse(self, events: AsyncIterator[bytes], media_type: str = "text/event-stream") -> Response:
        headers = {"request-id": _id("req_"), "cache-control": "no-cache"}
        return _EventStream(events, media_type=media_type, headers=headers)

    # -- streaming ---------------------------------------------------------------
    async def _events(self, reply: FakeReply, model: str, fault: Fault | None = None) -> AsyncIterator[bytes]:
        """The SSE sequence of one answer; a `cut`/`stall_stream` fault interrupts it after N chunks."""
        track = {"sent": 0, "outcome": "running"}
        self.streams.append(track)
        chunks = 0
        try:
            for name, data, is_chunk in stream_events(reply, model):
                if is_chunk and fault is not None and chunks == fault.after_chunks:
                    if fault.kind == "cut":
                        track["outcome"] = "cut"
                        raise CutConnection("injected cut")
                    await asyncio.sleep(fault.seconds)  # stall_stream: go silent, then carry on
                    fault = None
                if is_chunk:
                    chunks += 1
                    if reply.chunk_delay:
                        await asyncio.sleep(reply.chunk_delay)
                yield sse(data, event=name)
                track["sent"] += 1
            track["outcome"] = "completed"
        finally:
            if track["outcome"] == "running":  # closed or cancelled at a step: the client left
                track["outcome"] = "closed"


def stream_events(reply: FakeReply, model: str) -> list[tuple[str, dict[str, Any], bool]]:
    """(event name, data, counts as a chunk) for one answer, in Anthropic's order."""
    message = message_json(reply, model)
    start = dict(message, content=[], stop_reason=None, stop_sequence=None)
    start["usage"] = dict(message["usage"], output_tokens=1)
    events: list[tuple[str, dict[str, Any], bool]] = [
        ("message_start", {"type": "message_start", "message": start}, False)
    ]
    for index, block in enumerate(message["content"]):
        events += _block_events(index, block, reply)
        if index == 0:
            events.append(("ping", {"type": "ping"}, False))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": message["usage"]}, False)
    )
    events.append(("message_stop", {"type": "message_stop"}, False))
    return events


def _block_events(
    index: int, block: dict[str, Any], reply: FakeReply
) -> list[tuple[str, dict[str, Any], bool]]:
    if block["type"] == "text":
        first = {"type": "text", "text": ""}
        pieces = [{"type": "text_delta", "text": t} for t in reply.text_chunks()]
    else:
        first = dict(block, input={})
        arguments = json.dumps(block["input"])
        n = max(1, reply.chunk_size)
        pieces = [{"type": "input_json_delta", "partial_json": ""}]  # the API opens with an empty piece
        pieces += [
            {"type": "input_json_delta", "partial_json": arguments[i : i + n]}
            for i in range(0, len(arguments), n)
        ]
    events = [
        (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": first},
            False,
        )
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": p}, True)
        for p in pieces
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}, False))
    return events


def message_json(reply: FakeReply, model: str) -> dict[str, Any]:
    """A complete Messages API response body for `reply`."""
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        call.id = call.id or _id("toolu_01")
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    return {
        "id": _id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS[reply.finish_reason],
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens - reply.cached_tokens - reply.cache_write_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cached_tokens,
            "output_tokens": reply.output_tokens,
            "service_tier": "standard",
        },
    }


def cached_prefix(body: dict[str, Any]) -> str | None:
    """The prompt up to its last cache_control breakpoint, in Anthropic's cache
    order (tools, system, messages), as JSON; None without a breakpoint."""
    system = body.get("system")
    blocks: list[Any] = list(body.get("tools") or []) + (system if isinstance(system, list) else [system])
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks += content if isinstance(content, list) else [content]
    marked = [i for i, block in enumerate(blocks) if isinstance(block, dict) and block.get("cache_control")]
    return json.dumps(blocks[: marked[-1] + 1], sort_keys=True) if marked else None


def status_response(fault: Fault) -> Response:
    error_type = fault.error_type or ERROR_TYPES.get(fault.status, "api_error")
    headers = {"request-id": _id("req_")}
    if fault.retry_after is not None:
        headers["retry-after"] = f"{fault.retry_after:g}"
    return JSONResponse(error_body(error_type, fault.message), fault.status, headers=headers)


def _json(body: dict[str, Any]) -> Response:
    return JSONResponse(body, headers={"request-id": _id("req_")})


async def _malformed_events() -> AsyncIterator[bytes]:
    yield sse("{not json", event="message_start")


async def _partial_json(fault: Fault, reply: FakeReply, model: str) -> AsyncIterator[bytes]:
    """A plain JSON answer sent in two halves, with the fault between them."""
    text = json.dumps(message_json(reply, model)).encode()
    yield text[: len(text) // 2]
    if fault.kind == "cut":
        raise CutConnection("injected cut")
    await asyncio.sleep(fault.seconds)
    yield text[len(text) // 2 :]
