"""The anthropic adapter: what Anthropic receives on the wire, and the pure mappings.

The shared behaviour (chat, stream, tools, errors) is in test_conformance.py; this
file checks the Anthropic-specific shapes through the real SDK against
tests/fakes/anthropic_server.py, and the mapping functions without a network.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import anthropic
import httpx2
import pytest

from providers.adapters import get_adapter
from providers.adapters.anthropic import (
    JSON_INSTRUCTION,
    StreamState,
    error_from_sdk,
    request_to_wire,
    result_from_wire,
    usage_from_wire,
)
from providers.types import ChatRequest, ImagePart, Message, ProviderError, TextPart, Tool, ToolCall
from tests.fakes.anthropic_server import FakeAnthropicServer, message_json
from tests.fakes.common import FakeReply, FakeToolCall, Fault

MODEL = FakeAnthropicServer.model
WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def _server():
    server = FakeAnthropicServer().start()
    yield server
    server.stop()


@pytest.fixture
def fake(_server):
    _server.reset()
    yield _server
    _server.reset()


def last_body(fake) -> dict:
    return fake.requests[-1]["body"]


# -- on the wire -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_system_is_separated_and_turns_alternate(fake):
    call = ToolCall(id="toolu_01A", name="get_weather", arguments='{"city": "Oslo"}')
    call2 = ToolCall(id="toolu_01B", name="get_weather", arguments='{"city": "Rome"}')
    request = ChatRequest(
        model=MODEL,
        messages=[
            Message(role="system", content="You are terse."),
            Message(role="user", content="Weather in Oslo"),
            Message(role="user", content="and Rome?"),
            Message(role="system", content="Use metric units."),
            Message(role="assistant", content="Checking.", tool_calls=[call, call2]),
            Message(role="tool", tool_call_id="toolu_01A", content='{"c": 3}'),
            Message(role="tool", tool_call_id="toolu_01B", content='{"c": 19}'),
            Message(role="user", content="Thanks"),
        ],
        tools=[WEATHER],
    )
    await get_adapter(fake.adapter_config()).chat(request)
    body = last_body(fake)
    assert body["system"] == "You are terse.\n\nUse metric units."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Weather in Oslo"},
        {"type": "text", "text": "and Rome?"},
    ]
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    # Both results in one user turn, before the user's next words (Anthropic wants them first).
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": '{"c": 3}'},
        {"type": "tool_result", "tool_use_id": "toolu_01B", "content": '{"c": 19}'},
        {"type": "text", "text": "Thanks"},
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER.parameters,
        }
    ]


@pytest.mark.asyncio
async def test_images_go_as_base64_or_url_sources(fake):
    content = [
        TextPart("What is in these?"),
        ImagePart(url=f"data:image/png;base64,{PNG}"),
        ImagePart(url="https://example.com/cat.jpg"),
    ]
    await get_adapter(fake.adapter_config()).chat(
        ChatRequest(model=MODEL, messages=[Message("user", content)])
    )
    blocks = last_body(fake)["messages"][0]["content"]
    assert blocks == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.asyncio
async def test_sampling_stop_and_parallel_tool_use_reach_the_wire(fake):
    request = ChatRequest(
        model=MODEL,
        messages=[Message("user", "hi")],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        stop=["END", "STOP"],
        temperature=0.2,
        max_tokens=321,
        user="user-42",
    )
    await get_adapter(fake.adapter_config()).chat(request)
    body = last_body(fake)
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["stop_sequences"] == ["END", "STOP"]
    assert body["temperature"] == 0.2  # through extra_body: the SDK signature no longer has it
    assert body["max_tokens"] == 321
    assert body["metadata"] == {"user_id": "user-42"}
    assert "system" not in body and "top_p" not in body


@pytest.mark.asyncio
async def test_max_tokens_defaults_from_options_then_4096(fake):
    request = ChatRequest(model=MODEL, messages=[Message("user", "hi")])
    await get_adapter(fake.adapter_config()).chat(request)
    assert last_body(fake)["max_tokens"] == 4096
    await get_adapter(fake.adapter_config(options={"default_max_tokens": 777})).chat(request)
    assert last_body(fake)["max_tokens"] == 777


@pytest.mark.asyncio
async def test_the_configured_credential_authenticates_the_call(fake):
    await get_adapter(fake.adapter_config(credential="sk-ant-wire-check")).chat(
        ChatRequest(model=MODEL, messages=[Message("user", "hi")])
    )
    headers = fake.requests[-1]["headers"]
    # anthropic SDK 2.x sends the API key as a bearer token, not as x-api-key.
    assert (
        headers.get("x-api-key") == "sk-ant-wire-check"
        or headers.get("authorization") == "Bearer sk-ant-wire-check"
    )
    assert headers["anthropic-version"]
    assert fake.requests[-1]["path"] == "/v1/messages"


@pytest.mark.asyncio
async def test_the_fake_refuses_calls_without_a_key_in_anthropics_envelope(fake):
    async with httpx2.AsyncClient() as client:
        response = await client.post(
            f"{fake.base_url}/v1/messages", json={"model": MODEL}, headers={"anthropic-version": "2023-06-01"}
        )
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"


@pytest.mark.asyncio
async def test_the_fake_counts_tokens(fake):
    client = anthropic.AsyncAnthropic(api_key="sk-ant-test-fake", base_url=fake.base_url, max_retries=0)
    try:
        counted = await client.messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "hello"}]
        )
    finally:
        await client.close()
    assert counted.input_tokens > 0


# -- usage ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cached_tokens_are_added_back_into_input_when_streaming(fake):
    fake.script(FakeReply(text="Cached stream.", input_tokens=100, output_tokens=20, cached_tokens=60))
    usages = [e.usage async for e in get_adapter(fake.adapter_config()).stream(ask()) if e.type == "usage"]
    assert (usages[-1].input_tokens, usages[-1].cached_tokens, usages[-1].output_tokens) == (100, 60, 20)
    # The first usage event comes from message_start: input is billed even if the stream is cut later.
    assert usages[0].input_tokens == 100


def test_usage_counts_cache_reads_and_writes_as_input():
    usage = anthropic.types.Usage(
        input_tokens=10, cache_read_input_tokens=60, cache_creation_input_tokens=30, output_tokens=5
    )
    result = usage_from_wire(usage)
    assert (result.input_tokens, result.cached_tokens, result.cache_write_tokens) == (100, 60, 30)
    assert result.output_tokens == 5


def test_a_message_delta_without_input_counts_keeps_message_starts():
    start = usage_from_wire(
        anthropic.types.Usage(input_tokens=40, cache_read_input_tokens=60, output_tokens=1)
    )
    delta = anthropic.types.MessageDeltaUsage(output_tokens=9)
    assert usage_from_wire(delta, previous=start).input_tokens == 100
    assert usage_from_wire(delta, previous=start).output_tokens == 9


# -- streaming ------------------------------------------------------------------------


def ask(text: str = "Say hello.", **kwargs) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=[Message("system", "Be terse."), Message("user", text)], **kwargs
    )


@pytest.mark.asyncio
async def test_tool_calls_are_numbered_among_tool_calls_only(fake):
    fake.script(FakeReply(text="Let me look.", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"})]))
    events = [e async for e in get_adapter(fake.adapter_config()).stream(ask(tools=[WEATHER]))]
    calls = [e for e in events if e.type == "tool_call"]
    assert {e.index for e in calls} == {0}  # block 1 in Anthropic's numbering, call 0 in ours
    assert calls[0].tool_call_id.startswith("toolu_") and calls[0].name == "get_weather"
    assert json.loads("".join(e.arguments for e in calls)) == {"city": "Oslo"}
    assert "".join(e.text for e in events if e.type == "delta") == "Let me look."
    assert events[-1].type == "done" and events[-1].finish_reason == "tool_calls"


@pytest.mark.asyncio
async def test_closing_a_stream_early_stops_the_providers_stream(fake):
    long_text = "word " * 400
    fake.script(FakeReply(text=long_text, chunk_size=5, chunk_delay=0.02))
    stream = get_adapter(fake.adapter_config()).stream(ask())
    received = 0
    async for event in stream:
        received += event.type == "delta"
        if received == 3:
            break
    await stream.aclose()
    sent = -1
    for _ in range(100):  # wait until the fake has noticed and stopped sending
        await asyncio.sleep(0.05)
        if fake.streams[-1]["outcome"] != "running" and fake.streams[-1]["sent"] == sent:
            break
        sent = fake.streams[-1]["sent"]
    assert fake.streams[-1]["outcome"] == "closed"
    assert sent < 50  # of the 400+ events this answer has


def test_message_start_reports_usage_at_once():
    state = StreamState()
    start = message_json(FakeReply(text="", input_tokens=30, cached_tokens=10), MODEL)
    events = state.events(_event({"type": "message_start", "message": dict(start, stop_reason=None)}))
    assert [e.type for e in events] == ["usage"] and events[0].usage.input_tokens == 30


def test_an_error_event_inside_a_200_stream_maps_by_its_type():
    # The SDK raises an `error` SSE event as an APIStatusError carrying the stream's 200.
    error = anthropic.APIStatusError(
        "overloaded",
        response=httpx2.Response(200, request=httpx2.Request("POST", "http://127.0.0.1/v1/messages")),
        body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    mapped = error_from_sdk(error)
    assert (mapped.kind, mapped.retryable, mapped.status) == ("unavailable", True, None)


def _event(data: dict):
    from anthropic._models import construct_type
    from anthropic.types import RawMessageStreamEvent

    return construct_type(value=data, type_=RawMessageStreamEvent)


# -- pure request mapping --------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ("get_weather", None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("get_weather", False, {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_mapping(choice, parallel, expected):
    params = request_to_wire(ask(tools=[WEATHER], tool_choice=choice, parallel_tool_calls=parallel))
    assert params.get("tool_choice") == expected


def test_no_tools_means_no_tool_choice():
    assert "tool_choice" not in request_to_wire(ask(tool_choice="required"))


def test_json_object_is_asked_for_in_the_system_prompt():
    params = request_to_wire(ask(response_format={"type": "json_object"}))
    assert params["system"] == f"Be terse.\n\n{JSON_INSTRUCTION}"
    assert "output_config" not in params


def test_json_schema_uses_structured_outputs():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    params = request_to_wire(
        ask(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    )
    output = params["output_config"]["format"]
    assert output["type"] == "json_schema"
    assert output["schema"]["properties"]["a"]["type"] == "integer"


def test_temperature_wins_over_top_p_and_neither_is_sent_unset():
    assert request_to_wire(ask(temperature=0.5, top_p=0.9))["extra_body"] == {"temperature": 0.5}
    assert request_to_wire(ask(top_p=0.9))["extra_body"] == {"top_p": 0.9}
    assert "extra_body" not in request_to_wire(ask())


def test_empty_turns_are_dropped_and_tool_results_may_hold_parts():
    params = request_to_wire(
        ChatRequest(
            model=MODEL,
            messages=[
                Message("user", "go"),
                Message("assistant", None),
                Message("tool", [TextPart("done")], tool_call_id="toolu_1"),
            ],
        )
    )
    assert params["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "go"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "done"}],
                },
            ],
        }
    ]


def test_tool_arguments_that_are_not_a_json_object_are_a_bad_request():
    request = ChatRequest(
        model=MODEL,
        messages=[
            Message("user", "x"),
            Message("assistant", None, tool_calls=[ToolCall("t1", "f", "not json")]),
        ],
    )
    with pytest.raises(ProviderError) as caught:
        request_to_wire(request)
    assert caught.value.kind == "bad_request"


# -- pure response and error mapping ------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason, finish):
    body = message_json(FakeReply(text="hi"), MODEL)
    body["stop_reason"] = stop_reason
    assert result_from_wire(anthropic.types.Message.model_validate(body)).finish_reason == finish


def test_a_message_maps_to_a_chat_result():
    reply = FakeReply(text="Two calls.", tool_calls=[FakeToolCall("a", {"x": 1}), FakeToolCall("b", {})])
    body = message_json(reply, MODEL)
    result = result_from_wire(anthropic.types.Message.model_validate(body))
    assert result.content == "Two calls."
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [("a", {"x": 1}), ("b", {})]
    assert result.tool_calls[0].id == body["content"][1]["id"]
    assert result.provider_request_id == body["id"] and result.model == MODEL


def test_a_body_that_is_not_a_message_is_unavailable():
    with pytest.raises(ProviderError) as caught:
        result_from_wire("<html>oops</html>")
    assert caught.value.kind == "unavailable"


def _status_error(status: int, error_type: str, message: str, headers: dict | None = None):
    from anthropic._error_classes import make_status_error

    response = httpx2.Response(
        status, headers=headers or {}, request=httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    )
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return make_status_error(f"Error code: {status}", body=body, response=response)


@pytest.mark.parametrize(
    ("status", "error_type", "message", "kind"),
    [
        (529, "overloaded_error", "Overloaded", "unavailable"),
        (503, "api_error", "down", "unavailable"),
        (504, "timeout_error", "slow", "timeout"),
        (403, "permission_error", "no", "auth"),
        (413, "request_too_large", "too big", "bad_request"),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 215438 tokens > 200000 maximum",
            "context_length",
        ),
        (
            400,
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 1 + 2 > 2",
            "context_length",
        ),
        (400, "invalid_request_error", "messages: roles must alternate", "bad_request"),
    ],
)
def test_status_errors_map_to_the_taxonomy(status, error_type, message, kind):
    assert error_from_sdk(_status_error(status, error_type, message)).kind == kind


def test_retry_after_is_read_from_the_header():
    assert (
        error_from_sdk(_status_error(429, "rate_limit_error", "slow", {"retry-after": "7"})).retry_after
        == 7
    )
    error = error_from_sdk(_status_error(429, "rate_limit_error", "slow", {"retry-after-ms": "1500"}))
    assert error.retry_after == 1.5


def test_the_adapter_does_not_import_django():
    code = "import sys, providers.adapters.anthropic; assert 'django' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# -- faults the battery does not cover ----------------------------------------------------


async def _stream_end(adapter, request):
    text, last = [], None
    async for event in adapter.stream(request):
        last = event
        if event.type == "delta":
            text.append(event.text)
    return "".join(text), last


@pytest.mark.asyncio
async def test_a_stream_that_goes_silent_times_out_after_what_arrived(fake):
    fake.script(Fault("stall_stream", after_chunks=2, seconds=3, reply=FakeReply(text="Slow answer coming.")))
    text, last = await _stream_end(get_adapter(fake.adapter_config(read_timeout=0.5)), ask())
    assert text == "Slow answer coming."[:8]
    assert last.type == "error" and last.error.kind == "timeout" and last.error.retryable


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault("malformed"), "unavailable"),
        (Fault("status", status=401, message="invalid x-api-key"), "auth"),
        (Fault("status", status=529, message="Overloaded"), "unavailable"),
        (Fault("stall", seconds=3), "timeout"),
    ],
)
@pytest.mark.asyncio
async def test_stream_faults_end_in_an_error_event(fake, fault, kind):
    fake.script(fault)
    _, last = await _stream_end(get_adapter(fake.adapter_config(read_timeout=0.5)), ask())
    assert last.type == "error" and last.error.kind == kind


@pytest.mark.asyncio
async def test_a_plain_answer_cut_mid_body_is_unavailable(fake):
    fake.script(Fault("cut", reply=FakeReply(text="A long plain answer.")))
    with pytest.raises(ProviderError) as caught:
        await get_adapter(fake.adapter_config()).chat(ask())
    assert caught.value.kind == "unavailable" and caught.value.retryable
