"""Gemini-specific checks: what the fake (so Gemini) received, and the pure mappings.

The shared behaviour (chat, stream, tools, usage, errors) is in test_conformance.py.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from google.genai import errors as genai_errors
from google.genai import types as gt

from providers.adapters import get_adapter
from providers.adapters.gemini import (
    GeminiAdapter,
    StreamState,
    error_from_sdk,
    request_to_wire,
    result_from_wire,
    scrub,
)
from providers.types import ChatRequest, ImagePart, Message, ProviderError, TextPart, Tool, ToolCall
from tests.fakes.common import FakeReply, FakeToolCall, Fault
from tests.fakes.gemini_server import FakeGeminiServer, error_body

WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool(name="get_time", parameters={"type": "object", "properties": {"tz": {"type": "string"}}})
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\nfake-pixel").decode()


@pytest.fixture(scope="module")
def _server():
    server = FakeGeminiServer().start()
    yield server
    server.stop()


@pytest.fixture
def fake(_server):
    _server.reset()
    yield _server
    _server.reset()


def adapter(fake, **overrides) -> GeminiAdapter:
    return get_adapter(fake.adapter_config(**overrides))  # type: ignore[return-value]


def request(fake, *messages: Message, **kwargs) -> ChatRequest:
    return ChatRequest(model=fake.model, messages=list(messages), **kwargs)


def wire(obj: dict, name: str):
    """A field by its JSON name. The SDK sends some nested fields in their proto names
    (`mime_type`, `parameters_json_schema`); Gemini's proto JSON parser takes both."""
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name)
    return obj[name] if name in obj else obj[snake]


async def collect(stream):
    return [event async for event in stream]


# -- what Gemini receives ----------------------------------------------------------


@pytest.mark.asyncio
async def test_the_wire_request_carries_system_roles_tools_and_results(fake):
    calls = [
        ToolCall("call_a", "get_weather", '{"city": "Oslo"}'),
        ToolCall("call_b", "get_time", '{"tz": "CET"}'),
    ]
    req = request(
        fake,
        Message(role="system", content="You are terse."),
        Message(role="user", content="Weather and time in Oslo?"),
        Message(role="assistant", content="Checking.", tool_calls=calls),
        Message(role="tool", tool_call_id="call_a", content='{"sky": "clear"}'),
        Message(role="tool", tool_call_id="call_b", content="14:05"),
        tools=[WEATHER, TIME],
        tool_choice="auto",
    )
    await adapter(fake).chat(req)
    sent = fake.requests[-1]
    assert sent["path"] == f"/v1/models/{fake.model}:generateContent"
    body = sent["body"]
    assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    model_turn = body["contents"][1]["parts"]
    assert model_turn[0] == {"text": "Checking."}
    assert model_turn[1]["functionCall"] == {"id": "call_a", "name": "get_weather", "args": {"city": "Oslo"}}
    # both results in one user turn, each named after the call it answers
    results = [p["functionResponse"] for p in body["contents"][2]["parts"]]
    assert results == [
        {"id": "call_a", "name": "get_weather", "response": {"sky": "clear"}},
        {"id": "call_b", "name": "get_time", "response": {"output": "14:05"}},  # text goes under "output"
    ]
    declarations = body["tools"][0]["functionDeclarations"]
    assert declarations[0]["name"] == "get_weather"
    assert wire(declarations[0], "parametersJsonSchema") == WEATHER.parameters
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


@pytest.mark.asyncio
async def test_images_go_inline_or_by_uri(fake):
    content = [
        TextPart("What is in these?"),
        ImagePart(url=f"data:image/png;base64,{PIXEL}"),
        ImagePart(url="https://example.com/cat.webp"),
    ]
    await adapter(fake).chat(request(fake, Message(role="user", content=content)))
    parts = fake.requests[-1]["body"]["contents"][0]["parts"]
    assert parts[0] == {"text": "What is in these?"}
    inline, by_uri = parts[1]["inlineData"], parts[2]["fileData"]
    assert (wire(inline, "mimeType"), inline["data"]) == ("image/png", PIXEL)
    assert base64.b64decode(inline["data"]) == base64.b64decode(PIXEL)
    assert wire(by_uri, "fileUri") == "https://example.com/cat.webp"
    assert wire(by_uri, "mimeType") == "image/webp"


@pytest.mark.asyncio
async def test_generation_config_fields_reach_gemini(fake):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    req = request(
        fake,
        Message(role="user", content="JSON please"),
        temperature=0.3, top_p=0.9, max_tokens=256, stop=["END"], seed=42,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        tools=[WEATHER], tool_choice="get_weather",
    )
    await adapter(fake).chat(req)
    body = fake.requests[-1]["body"]
    assert body["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "maxOutputTokens": 256, "stopSequences": ["END"], "seed": 42,
        "responseMimeType": "application/json", "responseJsonSchema": schema,
    }
    forced = {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    assert body["toolConfig"]["functionCallingConfig"] == forced


@pytest.mark.asyncio
async def test_the_key_travels_in_a_header_not_the_url(fake):
    gemini = adapter(fake, credential="AIza-header-only-key")
    await gemini.chat(request(fake, Message(role="user", content="hi")))
    sent = fake.requests[-1]
    assert sent["headers"]["x-goog-api-key"] == "AIza-header-only-key"
    assert "AIza-header-only-key" not in sent["path"]


@pytest.mark.asyncio
async def test_gemini_ids_are_kept_and_missing_ones_generated(fake):
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Rome"}, id="gem-id-1"),
                                               FakeToolCall("get_time", {"tz": "CET"})]))
    ask = request(fake, Message(role="user", content="Both"), tools=[WEATHER, TIME])
    result = await adapter(fake).chat(ask)
    ids = [c.id for c in result.tool_calls]
    assert ids[0] == "gem-id-1"
    assert ids[1].startswith("call_") and len(ids[1]) > 10


@pytest.mark.asyncio
@pytest.mark.parametrize("streamed", [False, True])
async def test_thought_signatures_go_back_with_their_calls(fake, streamed):
    gemini = adapter(fake)
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}),
                                               FakeToolCall("get_time", {"tz": "CET"})]))
    ask = request(fake, Message(role="user", content="Both"), tools=[WEATHER, TIME])
    if streamed:
        events = await collect(gemini.stream(ask))
        calls = [ToolCall(e.tool_call_id, e.name, e.arguments) for e in events if e.type == "tool_call"]
    else:
        calls = (await gemini.chat(ask)).tool_calls
    ask.messages += [Message(role="assistant", tool_calls=calls)] + [
        Message(role="tool", tool_call_id=c.id, content="{}") for c in calls]
    await gemini.chat(ask)
    model_turn = fake.requests[-1]["body"]["contents"][1]["parts"]
    signature = wire(model_turn[0], "thoughtSignature")
    assert base64.b64decode(signature) == base64.b64decode(fake.thought_signature("get_weather"))
    assert "thoughtSignature" not in model_turn[1] and "thought_signature" not in model_turn[1]


# -- finish reasons, streams ---------------------------------------------------------


@pytest.mark.asyncio
async def test_safety_blocks_are_content_filter(fake):
    blocked = FakeReply(text="Partial", finish="content_filter")
    fake.script(blocked, blocked)
    result = await adapter(fake).chat(request(fake, Message(role="user", content="something risky")))
    assert result.finish_reason == "content_filter"
    ask = request(fake, Message(role="user", content="something risky"))
    events = await collect(adapter(fake).stream(ask))
    assert events[-1].type == "done" and events[-1].finish_reason == "content_filter"


@pytest.mark.asyncio
async def test_max_tokens_is_length(fake):
    fake.script(FakeReply(text="Truncat", finish="length"))
    result = await adapter(fake).chat(request(fake, Message(role="user", content="long essay")))
    assert result.finish_reason == "length"


@pytest.mark.asyncio
async def test_stream_tool_calls_arrive_whole_with_distinct_indexes(fake):
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}),
                                               FakeToolCall("get_time", {"tz": "CET"})]))
    events = await collect(adapter(fake).stream(request(fake, Message(role="user", content="Both"),
                                                        tools=[WEATHER, TIME])))
    calls = [e for e in events if e.type == "tool_call"]
    assert [(e.index, e.name, json.loads(e.arguments)) for e in calls] == [
        (0, "get_weather", {"city": "Oslo"}), (1, "get_time", {"tz": "CET"})]
    assert all(e.tool_call_id for e in calls)
    assert [e.type for e in events[-2:]] == ["usage", "done"]


@pytest.mark.asyncio
async def test_closing_a_stream_early_closes_the_connection(fake):
    fake.script(FakeReply(text="x" * 400, chunk_size=4, chunk_delay=0.02))
    stream = adapter(fake).stream(request(fake, Message(role="user", content="long")))
    first = await anext(stream)
    assert first.type == "delta"
    await stream.aclose()
    for _ in range(100):  # the fake notices the disconnect on its next write
        if fake.streams and fake.streams[-1]["closed"]:
            break
        await asyncio.sleep(0.02)
    state = fake.streams[-1]
    assert state["closed"] and not state["completed"]
    assert state["sent"] < 100


@pytest.mark.asyncio
async def test_a_malformed_stream_is_an_unavailable_error_event(fake):
    fake.script(Fault("malformed"))
    events = await collect(adapter(fake).stream(request(fake, Message(role="user", content="hi"))))
    assert events[-1].type == "error" and events[-1].error.kind == "unavailable"


@pytest.mark.asyncio
async def test_a_stalled_stream_times_out(fake):
    fake.script(Fault("stall_stream", after_chunks=1, seconds=3, reply=FakeReply(text="slow and steady")))
    ask = request(fake, Message(role="user", content="hi"))
    events = await collect(adapter(fake, read_timeout=0.4).stream(ask))
    assert events[0].type == "delta"
    assert events[-1].type == "error" and events[-1].error.kind == "timeout" and events[-1].error.retryable


# -- errors ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_invalid_key_is_auth_and_the_key_never_leaks(fake):
    canary = "AIzaSy-canary-DO-NOT-LEAK-0123456789"
    fake.script(fake.invalid_key_fault())
    with pytest.raises(ProviderError) as caught:
        await adapter(fake, credential=canary).chat(request(fake, Message(role="user", content="hi")))
    assert caught.value.kind == "auth" and caught.value.retryable is False
    assert canary not in str(caught.value) and canary not in repr(caught.value)
    assert caught.value.__cause__ is None  # SDK errors (with request details) are not chained


@pytest.mark.asyncio
async def test_missing_key_at_the_fake_is_refused(fake):
    import httpx

    async with httpx.AsyncClient() as client:
        reply = await client.post(f"{fake.base_url}/v1/models/{fake.model}:generateContent",
                                  json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert reply.status_code == 403
    assert reply.json()["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.asyncio
async def test_no_configured_key_fails_as_auth_without_calling(fake):
    with pytest.raises(ProviderError) as caught:
        await adapter(fake, credential="").chat(request(fake, Message(role="user", content="hi")))
    assert caught.value.kind == "auth"
    assert fake.call_count == 0


@pytest.mark.asyncio
async def test_a_request_gemini_cannot_take_is_bad_request_not_a_crash(fake):
    broken = Message(role="user", content=[ImagePart(url="data:image/png;base64,abc")])  # bad padding
    with pytest.raises(ProviderError) as caught:
        await adapter(fake).chat(request(fake, broken))
    assert caught.value.kind == "bad_request"
    events = await collect(adapter(fake).stream(request(fake, broken)))
    assert [e.type for e in events] == ["error"] and events[0].error.kind == "bad_request"
    assert fake.call_count == 0


def _api_error(code: int, message: str, status: str, **kw) -> genai_errors.APIError:
    # What the SDK raises for a response it could not keep (no headers to read).
    cls = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    return cls(code, error_body(code, message, status, **kw), None)


def test_retry_after_falls_back_to_retry_info():
    error = error_from_sdk(_api_error(429, "Quota exceeded", "RESOURCE_EXHAUSTED", retry_after=1.5))
    assert (error.kind, error.retry_after, error.retryable) == ("rate_limited", 1.5, True)


@pytest.mark.parametrize(
    "code,status,message,kind",
    [
        (400, "INVALID_ARGUMENT",
         "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
         "context_length"),
        (400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "bad_request"),
        (400, "API_KEY_INVALID", "API key not valid. Please pass a valid API key.", "auth"),
        (403, "PERMISSION_DENIED", "Permission denied", "auth"),
        (404, "NOT_FOUND", "models/nope is not found", "bad_request"),
        (500, "INTERNAL", "An internal error has occurred.", "unavailable"),
        (503, "UNAVAILABLE", "The model is overloaded.", "unavailable"),
        (504, "DEADLINE_EXCEEDED", "Deadline exceeded", "timeout"),
    ],
)
def test_api_errors_map_to_the_taxonomy(code, status, message, kind):
    assert error_from_sdk(_api_error(code, message, status)).kind == kind


def test_a_key_in_a_url_or_echoed_back_is_scrubbed():
    key = "AIzaSy-secret-key-value"
    text = f"GET https://generativelanguage.googleapis.com/v1/models?key={key}&alt=sse failed for {key}"
    cleaned = scrub(text, key)
    assert key not in cleaned and "key=***" in cleaned
    error = error_from_sdk(_api_error(400, f"bad request for key={key}", "INVALID_ARGUMENT"), secret=key)
    assert key not in str(error)


# -- pure mappings -----------------------------------------------------------------


def test_tool_choice_modes():
    base = [Message(role="user", content="hi")]

    def mode(choice):
        req = ChatRequest(model="m", messages=base, tools=[WEATHER], tool_choice=choice)
        _, config = request_to_wire(req)
        return config.tool_config.function_calling_config.mode.value if config.tool_config else None

    assert [mode(c) for c in (None, "auto", "none", "required")] == [None, "AUTO", "NONE", "ANY"]


def test_json_object_sets_the_mime_type_only():
    _, config = request_to_wire(ChatRequest(model="m", messages=[Message(role="user", content="x")],
                                              response_format={"type": "json_object"}))
    assert config.response_mime_type == "application/json" and config.response_json_schema is None


def test_the_sdk_never_runs_tools_or_re_requests_by_itself():
    _, config = request_to_wire(ChatRequest(model="m", messages=[Message(role="user", content="x")]))
    assert config.automatic_function_calling.disable is True
    assert config.automatic_continuation is False


def test_a_tool_result_for_an_unknown_call_uses_the_message_name():
    contents, _ = request_to_wire(ChatRequest(model="m", messages=[
        Message(role="user", content="x"),
        Message(role="tool", tool_call_id="orphan", name="lookup", content="[1, 2]"),
    ]))
    fr = contents[1].parts[0].function_response
    assert (fr.name, fr.response) == ("lookup", {"output": [1, 2]})


def test_from_response_skips_thoughts_and_counts_usage():
    result = result_from_wire({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Let me think...", "thought": True},
                {"text": "The answer "}, {"text": "is 4."},
            ]},
            "finishReason": "STOP",
        }],
        "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60,
                          "candidatesTokenCount": 13, "thoughtsTokenCount": 7, "totalTokenCount": 120},
        "modelVersion": "gemini-2.5-pro", "responseId": "resp-1",
    })
    assert result.content == "The answer is 4."
    assert result.finish_reason == "stop"
    u = result.usage
    assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens) == (100, 20, 60, 7)
    assert (result.model, result.provider_request_id) == ("gemini-2.5-pro", "resp-1")


def test_from_response_maps_calls_and_finish_reasons():
    calls = result_from_wire({"candidates": [{
        "content": {"role": "model",
                    "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
        "finishReason": "STOP"}]})
    assert calls.finish_reason == "tool_calls" and calls.content is None
    assert json.loads(calls.tool_calls[0].arguments) == {"city": "Oslo"}
    for reason, expected in [("MAX_TOKENS", "length"), ("RECITATION", "content_filter"),
                             ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
                             ("BLOCKLIST", "content_filter"), ("MALFORMED_FUNCTION_CALL", "error")]:
        candidate = {"content": {"parts": [{"text": "x"}]}, "finishReason": reason}
        result = result_from_wire({"candidates": [candidate]})
        assert result.finish_reason == expected, reason


def test_a_blocked_prompt_is_content_filter():
    result = result_from_wire({"promptFeedback": {"blockReason": "SAFETY"},
                                   "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}})
    assert result.finish_reason == "content_filter" and result.content is None
    assert result.usage.input_tokens == 9


def test_a_stream_without_a_finish_reason_is_incomplete():
    state = StreamState()
    chunk = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}
    state.events(gt.GenerateContentResponse.model_validate(chunk))
    with pytest.raises(ProviderError) as caught:
        state.check_complete()
    assert caught.value.kind == "unavailable"


@pytest.mark.asyncio
async def test_aclose_releases_the_client(fake):
    gemini = GeminiAdapter(fake.adapter_config(provider_id=7399))
    assert (await gemini.chat(request(fake, Message(role="user", content="hi")))).content
    await gemini.aclose()
    with pytest.raises(ProviderError):  # a closed client fails as a ProviderError, not a crash
        await gemini.chat(request(fake, Message(role="user", content="hi")))
