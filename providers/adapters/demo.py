"""The built-in demo provider: offline, deterministic, no keys.

It lets the first run work end to end and lets operators try routing and
fallback without a real provider. Answers say plainly that they come from the
demo. Provider options simulate a real provider's behaviour:
    latency_ms        delay before the first token (default 20)
    chunk_delay_ms    delay between streamed chunks (default 5)
    fail_with         an error kind to fail with (rate_limited, unavailable, ...)
    fail_rate         share of calls that fail with it (default 1.0 when fail_with is set)
    retry_after       Retry-After hint for simulated rate limits, seconds
    cut_after_chunks  streams stop with an error after this many chunks
    context_window    input tokens above this fail with context_length
Tools: when tools are offered and the last message is the user's, the demo
calls them (all of them, unless parallel_tool_calls is false) with arguments
built from each tool's JSON schema; after tool results it answers in text.
`response_format`: a json_schema answer is a value valid for the schema (its
required properties, types, enums); json_object is {"answer": "<the text>"}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

from providers.adapters.base import Adapter
from providers.types import (
    Capabilities,
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    Message,
    ModelListing,
    ProviderError,
    StreamEvent,
    Tool,
    ToolCall,
    Usage,
)

CHUNK_CHARS = 12


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _sample_value(schema: dict[str, Any], depth: int = 0) -> Any:
    """A value that satisfies `schema` (types, enums, required properties, nested), for the demo's JSON."""
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" and depth < 8:
        properties = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {name: _sample_value(properties.get(name) or {}, depth + 1) for name in required}
    if kind == "array" and depth < 8:
        return [_sample_value(schema["items"], depth + 1)] if isinstance(schema.get("items"), dict) else []
    return {"string": "demo", "integer": 1, "number": 1, "boolean": True, "null": None, "object": {},
            "array": []}.get(kind, "demo")


def sample_arguments(tool: Tool) -> str:
    return json.dumps(_sample_value({"type": "object", **(tool.parameters or {})}))


def json_answer(response_format: dict[str, Any], text: str) -> str:
    """The demo's answer as JSON: a value valid for a json_schema format, else {"answer": text}."""
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(_sample_value(schema if schema.get("type") else {"type": "object", **schema}))
    return json.dumps({"answer": text})


class DemoAdapter(Adapter):
    kind = "demo"
    capabilities = Capabilities(
        streaming=True, tools=True, parallel_tool_calls=True, images=False, json_mode=True, json_schema=True,
        embeddings=True, token_inputs=True,
        notes="Built-in demo: deterministic simulated answers, no real model.",
    )

    def _option(self, name: str, default: Any) -> Any:
        return self.config.options.get(name, default)

    # -- behaviour --------------------------------------------------------------
    def _answer(self, request: ChatRequest) -> tuple[str, list[ToolCall]]:
        conversation = request.conversation()
        last = conversation[-1] if conversation else None
        if request.tools and request.tool_choice != "none" and last is not None and last.role == "user":
            return "", self._tool_calls(request)
        if last is not None and last.role == "tool":
            results = "; ".join(m.text() for m in conversation if m.role == "tool")
            return f"[demo] Based on the tool results ({results[:200]}), here is a simulated answer.", []
        prompt = last.text() if last is not None else ""
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
        text = (f'[demo] Simulated answer {digest} to: "{prompt[:120]}". '
                "This reply comes from the built-in demo provider; route this persona to a real provider for real "
                "answers.")
        if (request.response_format or {}).get("type") in ("json_schema", "json_object"):
            return json_answer(request.response_format, text), []
        return text, []

    def _tool_calls(self, request: ChatRequest) -> list[ToolCall]:
        tools = request.tools
        if request.tool_choice not in (None, "auto", "required"):
            tools = [t for t in tools if t.name == request.tool_choice] or tools[:1]
        elif request.parallel_tool_calls is False:
            tools = tools[:1]
        seed = hashlib.sha256(request.conversation()[-1].text().encode()).hexdigest()[:8]
        return [ToolCall(f"call_demo_{seed}_{i}", t.name, sample_arguments(t)) for i, t in enumerate(tools)]

    def _usage(self, request: ChatRequest, text: str, calls: list[ToolCall]) -> Usage:
        prompt = "".join(m.text() for m in request.messages)
        produced = text + "".join(c.name + c.arguments for c in calls)
        output = estimate_tokens(produced)
        if request.max_tokens:
            output = min(output, request.max_tokens)
        return Usage(input_tokens=estimate_tokens(prompt), output_tokens=output)

    def _maybe_fail(self, request: ChatRequest) -> None:
        window = self._option("context_window", None)
        if window and estimate_tokens("".join(m.text() for m in request.messages)) > int(window):
            raise ProviderError("context_length", f"demo context window of {window} tokens exceeded", provider="demo")
        kind = self._option("fail_with", None)
        if kind and random.random() < float(self._option("fail_rate", 1.0)):
            raise ProviderError(kind, f"simulated {kind} error from the demo provider",
                                retry_after=self._option("retry_after", None), provider="demo")

    async def _wait(self, seconds: float) -> None:
        # A real provider that stays silent past the read timeout times out.
        if seconds > self.config.read_timeout:
            await asyncio.sleep(self.config.read_timeout)
            raise ProviderError("timeout", "demo provider did not answer in time", provider="demo")
        await asyncio.sleep(seconds)

    # -- the adapter interface --------------------------------------------------------
    def _bounded_answer(self, request: ChatRequest) -> tuple[str, list[ToolCall], str]:
        """The answer cut to max_tokens (~4 characters a token), as a real model stops."""
        text, calls = self._answer(request)
        if request.max_tokens and not calls and estimate_tokens(text) > request.max_tokens:
            return text[: request.max_tokens * 4], calls, "length"
        return text, calls, _finish(request, calls)

    async def chat(self, request: ChatRequest) -> ChatResult:
        await self._wait(float(self._option("latency_ms", 20)) / 1000)
        self._maybe_fail(request)
        text, calls, finish = self._bounded_answer(request)
        return ChatResult(
            content=text or None,
            tool_calls=calls,
            finish_reason=finish,
            usage=self._usage(request, text, calls),
            model=request.model,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        try:
            await self._wait(float(self._option("latency_ms", 20)) / 1000)
            self._maybe_fail(request)
        except ProviderError as error:
            yield StreamEvent("error", error=error)
            return
        text, calls, finish = self._bounded_answer(request)
        cut_after = self._option("cut_after_chunks", None)
        delay = float(self._option("chunk_delay_ms", 5)) / 1000
        for n, start in enumerate(range(0, len(text), CHUNK_CHARS)):
            if cut_after is not None and n >= int(cut_after):
                yield StreamEvent("error", error=ProviderError("unavailable", "demo stream cut", provider="demo"))
                return
            yield StreamEvent("delta", text=text[start : start + CHUNK_CHARS])
            await asyncio.sleep(delay)
        for index, call in enumerate(calls):
            yield StreamEvent("tool_call", index=index, tool_call_id=call.id, name=call.name, arguments=call.arguments)
        yield StreamEvent("usage", usage=self._usage(request, text, calls))
        yield StreamEvent("done", finish_reason=finish)

    async def list_models(self) -> list[ModelListing]:
        return [ModelListing("demo", context_window=128_000, max_output_tokens=4096)]

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Deterministic vectors: the same text gives the same vector, so retrieval demos behave."""
        # Token arrays embed as their ids' text: deterministic too, one token each.
        texts = [" ".join(map(str, item)) if isinstance(item, list) else item for item in request.inputs]
        self._maybe_fail(ChatRequest(model=request.model, messages=[Message("user", t) for t in texts]))
        dimensions = request.dimensions or DEMO_EMBEDDING_DIMENSIONS
        vectors = [_demo_vector(text, dimensions) for text in texts]
        tokens = (sum(len(item) for item in request.inputs) if request.has_tokens()
                  else sum(estimate_tokens(text) for text in texts))
        usage = Usage(input_tokens=tokens)
        return EmbeddingResult(vectors=vectors, usage=usage, model=request.model)


def _finish(request: ChatRequest, calls: list[ToolCall]) -> str:
    if calls:
        return "tool_calls"
    return "stop"


DEMO_EMBEDDING_DIMENSIONS = 256


def _demo_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector from the text's hash, stretched to `dimensions`."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] ^ (i * 131 % 256)) - 127.5) / 127.5 for i in range(dimensions)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]
