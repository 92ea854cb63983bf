"""OpenAI adapter specifics: what reaches the wire, pure mappings, error details.

The shared behaviour (chat, stream, tools, usage, error taxonomy) is in
test_conformance.py; here we look at OpenAI's own shapes.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from providers.adapters.openai import (
    OpenAIAdapter,
    StreamState,
    finish_reason_from_wire,
    request_to_wire,
    result_from_wire,
    retry_after_from_wire,
)
from providers.types import ChatRequest, ImagePart, Message, ProviderError, TextPart, Tool, ToolCall
from tests.fakes.common import FakeReply, FakeToolCall, Fault

WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PNG = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.reset()
    yield
    fake.reset()


@pytest_asyncio.fixture(loop_scope="session")
async def adapter(fake):
    instance = OpenAIAdapter(fake.adapter_config())
    yield instance
    await instance.aclose()


def ask(text: str = "Say hello.", **kwargs) -> ChatRequest:
    return ChatRequest(
        model="gpt-4o-mini",
        messages=[Message(role="system", content="You are terse."), Message(role="user", content=text)],
        **kwargs,
    )


def sent(fake) -> dict:
    return fake.requests[-1]["body"]


# -- what the fake received --------------------------------------------------------


@pytest.mark.asyncio
async def test_messages_and_sampling_params_reach_the_wire(fake, adapter):
    await adapter.chat(ask(temperature=0.2, top_p=0.9, max_tokens=64, stop=["END"], seed=7, user="hive-42"))
    body = sent(fake)
    assert fake.requests[-1]["path"] == "/v1/chat/completions"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ]
    assert body["model"] == "gpt-4o-mini"
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 64)
    assert (body["stop"], body["seed"], body["user"]) == (["END"], 7, "hive-42")
    assert "stream" not in body and "max_completion_tokens" not in body


@pytest.mark.asyncio
async def test_unset_params_are_not_sent(fake, adapter):
    await adapter.chat(ask())
    assert set(sent(fake)) == {"model", "messages"}


@pytest.mark.asyncio
async def test_max_completion_tokens_when_the_provider_asks_for_it(fake):
    config = fake.adapter_config(options={"max_tokens_param": "max_completion_tokens"})
    instance = OpenAIAdapter(config)
    try:
        await instance.chat(ask(max_tokens=32))
    finally:
        await instance.aclose()
    assert sent(fake)["max_completion_tokens"] == 32
    assert "max_tokens" not in sent(fake)


@pytest.mark.asyncio
async def test_tools_tool_choice_and_tool_results_in_openai_shape(fake, adapter):
    req = ask("Weather?", tools=[WEATHER], tool_choice="get_weather", parallel_tool_calls=False)
    req.messages += [
        Message(role="assistant", tool_calls=[ToolCall("call_1", "get_weather", '{"city":"Oslo"}')]),
        Message(role="tool", tool_call_id="call_1", content='{"sky": "grey"}'),
    ]
    await adapter.chat(req)
    body = sent(fake)
    function = {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER.parameters}
    assert body["tools"] == [{"type": "function", "function": function}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assistant, tool = body["messages"][2:]
    fn = {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    call = {"id": "call_1", "type": "function", "function": fn}
    assert assistant == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "grey"}'}


@pytest.mark.asyncio
async def test_image_parts_become_image_url_parts(fake, adapter):
    cat = "https://example.com/cat.jpg"
    content = [TextPart("What is in these?"), ImagePart(PNG), ImagePart(cat, detail="low")]
    await adapter.chat(ChatRequest(model="gpt-4o-mini", messages=[Message(role="user", content=content)]))
    assert sent(fake)["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]


@pytest.mark.asyncio
async def test_response_format_is_passed_through(fake, adapter):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
    await adapter.chat(ask(response_format=fmt))
    assert sent(fake)["response_format"] == fmt
    await adapter.chat(ask(response_format={"type": "json_object"}))
    assert sent(fake)["response_format"] == {"type": "json_object"}


@pytest.mark.asyncio
async def test_streaming_asks_for_usage(fake, adapter):
    events = [e async for e in adapter.stream(ask())]
    assert events[-1].type == "done"
    body = sent(fake)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


@pytest.mark.asyncio
async def test_authorization_header_carries_the_configured_credential(fake):
    instance = OpenAIAdapter(fake.adapter_config(credential="sk-proj-wire-check"))
    try:
        await instance.chat(ask())
    finally:
        await instance.aclose()
    assert fake.requests[-1]["headers"]["authorization"] == "Bearer sk-proj-wire-check"


@pytest.mark.asyncio
async def test_the_fake_refuses_a_missing_key_in_openai_envelope(fake):
    async with httpx.AsyncClient() as client:
        url = fake.base_url + "/v1/chat/completions"
        response = await client.post(url, json={"model": "x", "messages": []})
        models = await client.get(fake.base_url + "/v1/models", headers={"Authorization": "Bearer k"})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert [m["id"] for m in models.json()["data"]] == ["gpt-4o-mini"]


@pytest.mark.asyncio
async def test_provider_request_id_and_model_come_back(fake, adapter):
    result = await adapter.chat(ask())
    assert result.provider_request_id.startswith("req_")
    assert result.model == "gpt-4o-mini"


# -- streaming details ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_tool_call_stream_gives_id_and_name_first_then_argument_pieces(fake, adapter):
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})], chunk_size=3))
    events = [e async for e in adapter.stream(ask(tools=[WEATHER]))]
    calls = [e for e in events if e.type == "tool_call"]
    assert calls[0].tool_call_id.startswith("call_") and calls[0].name == "get_weather"
    assert all(e.tool_call_id is None and e.name is None for e in calls[1:])
    assert len(calls) > 2
    assert json.loads("".join(e.arguments for e in calls)) == {"city": "Paris"}
    assert [e.type for e in events[-2:]] == ["usage", "done"]


@pytest.mark.asyncio
async def test_closing_the_stream_early_stops_the_fake_stream(fake, adapter):
    fake.script(FakeReply(text="x" * 400, chunk_size=2, chunk_delay=0.02))  # ~200 chunks, ~4 s
    stream = adapter.stream(ask())
    got = 0
    async for event in stream:
        got += event.type == "delta"
        if got == 3:
            break
    await stream.aclose()
    progress = fake.streams[-1]
    deadline = time.monotonic() + 3
    while not progress["closed"] and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert progress["closed"] and not progress["completed"]
    assert progress["sent"] < progress["total"] // 2


@pytest.mark.asyncio
async def test_a_stream_that_stalls_mid_answer_ends_in_a_timeout_event(fake):
    fake.script(Fault("stall_stream", after_chunks=2, seconds=5, reply=FakeReply(text="Going quiet soon.")))
    instance = OpenAIAdapter(fake.adapter_config(read_timeout=0.5))
    try:
        events = [e async for e in instance.stream(ask())]
    finally:
        await instance.aclose()
    assert [e.type for e in events[:2]] == ["delta", "delta"]
    assert events[-1].type == "error" and events[-1].error.kind == "timeout"


@pytest.mark.asyncio
async def test_a_broken_sse_line_ends_in_an_unavailable_event(fake, adapter):
    fake.script(Fault("malformed"))
    events = [e async for e in adapter.stream(ask())]
    assert events[-1].type == "error" and events[-1].error.kind == "unavailable"


# -- errors --------------------------------------------------------------------------


async def chat_error(adapter, fake, *faults) -> ProviderError:
    fake.script(*faults)
    with pytest.raises(ProviderError) as caught:
        await adapter.chat(ask())
    return caught.value


@pytest.mark.asyncio
async def test_retry_after_as_an_http_date(fake, adapter):
    fake.error_headers = {"retry-after": email.utils.formatdate(time.time() + 30, usegmt=True)}
    error = await chat_error(adapter, fake, Fault("status", status=429, message="slow down"))
    assert error.kind == "rate_limited" and error.retryable
    assert 25 <= error.retry_after <= 31


@pytest.mark.asyncio
async def test_retry_after_ms_wins_over_retry_after(fake, adapter):
    fake.error_headers = {"retry-after-ms": "1500"}
    error = await chat_error(adapter, fake, Fault("status", status=429, retry_after=9))
    assert error.retry_after == 1.5


@pytest.mark.asyncio
async def test_insufficient_quota_is_rate_limited_but_not_retryable(fake, adapter):
    error = await chat_error(adapter, fake, Fault("status", status=429, error_type="insufficient_quota",
                                                  message="You exceeded your current quota"))
    assert error.kind == "rate_limited" and error.retryable is False


@pytest.mark.parametrize(
    "fault, kind",
    [
        (Fault("status", status=400, error_type="content_policy_violation"), "content_filter"),
        (Fault("status", status=400, error_type="content_filter", message="filtered"), "content_filter"),
        (Fault("status", status=400, message="This model's maximum context length is 8192 tokens."),
         "context_length"),
        (Fault("status", status=403, message="Project does not have access"), "auth"),
        (Fault("status", status=404, message="The model `gpt-9` does not exist"), "bad_request"),
        (Fault("status", status=502, message="Bad gateway"), "unavailable"),
        (Fault("cut", after_chunks=1), "unavailable"),
    ],
)
@pytest.mark.asyncio
async def test_more_errors_map_to_the_taxonomy(fake, adapter, fault, kind):
    error = await chat_error(adapter, fake, fault)
    assert error.kind == kind


@pytest.mark.asyncio
async def test_a_credential_echoed_by_the_server_is_scrubbed(fake):
    secret = "sk-echo-0123456789abcdef"
    fake.script(Fault("status", status=401, message=f"Incorrect API key provided: {secret}."))
    instance = OpenAIAdapter(fake.adapter_config(credential=secret))
    try:
        with pytest.raises(ProviderError) as caught:
            await instance.chat(ask())
    finally:
        await instance.aclose()
    assert caught.value.kind == "auth" and caught.value.status == 401
    assert secret not in str(caught.value) and secret not in repr(caught.value)


# -- pure mappings -------------------------------------------------------------------


def test_tool_choice_mapping_and_no_tool_params_without_tools():
    for choice in ("auto", "none", "required"):
        assert request_to_wire(ask(tools=[WEATHER], tool_choice=choice))["tool_choice"] == choice
    bare = request_to_wire(ask(tool_choice="required", parallel_tool_calls=True))
    assert "tool_choice" not in bare and "parallel_tool_calls" not in bare and "tools" not in bare


def test_extra_passes_only_known_knobs():
    req = ask(extra={"reasoning_effort": "low", "allowed_tools": ["Read"], "extra_body": {"top_k": 5}})
    params = request_to_wire(req)
    assert params["reasoning_effort"] == "low" and params["extra_body"] == {"top_k": 5}
    assert "allowed_tools" not in params


def test_result_from_wire_maps_content_tools_and_usage():
    completion = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_a", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}],
        }}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
                  "prompt_tokens_details": {"cached_tokens": 64},
                  "completion_tokens_details": {"reasoning_tokens": 12}},
    }
    result = result_from_wire(completion)
    assert result.content is None and result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("call_a", "f", "{}")]
    u = result.usage
    assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens) == (100, 30, 64, 12)
    assert result.model == "gpt-4o-2024-08-06" and result.provider_request_id == "chatcmpl-1"


def test_finish_reasons_normalise():
    assert finish_reason_from_wire("length") == "length"
    assert finish_reason_from_wire("content_filter") == "content_filter"
    assert finish_reason_from_wire("function_call") == "tool_calls"
    assert finish_reason_from_wire("eos") == "stop"  # unknown values from compatible servers
    assert finish_reason_from_wire(None) == "stop"
    assert finish_reason_from_wire("stop", has_tool_calls=True) == "tool_calls"


def test_stream_state_without_finish_reason_is_an_error():
    state = StreamState()
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    assert [e.text for e in state.events(chunk)] == ["hi"]
    final = state.final()
    assert final.type == "error" and final.error.kind == "unavailable"


def test_retry_after_parsing():
    assert retry_after_from_wire({"retry-after": "3"}) == 3
    assert retry_after_from_wire({"retry-after": "0.5"}) == 0.5
    assert retry_after_from_wire({"retry-after": "soon"}) is None
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert retry_after_from_wire({"retry-after": past}) == 0
    assert retry_after_from_wire({}) is None


def test_the_adapter_does_not_import_django():
    root = Path(__file__).resolve().parents[2]
    code = "import sys, providers.adapters.openai; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
