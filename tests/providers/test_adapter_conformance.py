"""One conformance battery, grouped by capability, run against every adapter.

Each adapter is driven through its real SDK against the wire-level fake of its
provider (tests/fakes). The battery asserts on our normalized types only; what
each provider received on the wire is checked in tests/providers/test_<kind>_adapter.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from providers.adapters import get_adapter
from providers.types import ChatRequest, ImagePart, Message, ProviderError, TextPart, Tool
from tests.fakes.common import FakeReply, FakeToolCall, Fault

pytestmark = pytest.mark.asyncio

WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool(
    name="get_time",
    description="Current time in a timezone",
    parameters={"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
)


def ask(harness, text: str = "Say hello.", **kwargs) -> ChatRequest:
    return ChatRequest(
        model=harness.model,
        messages=[Message(role="system", content="You are terse."), Message(role="user", content=text)],
        **kwargs,
    )


async def collect(adapter, request: ChatRequest):
    """Run a stream to its end: (text, tool calls by index, last usage, final event)."""
    text, calls, usage, last = [], {}, None, None
    async for event in adapter.stream(request):
        last = event
        if event.type == "delta":
            text.append(event.text)
        elif event.type == "tool_call":
            call = calls.setdefault(event.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or event.tool_call_id
            call["name"] = call["name"] or event.name
            call["arguments"] += event.arguments
        elif event.type == "usage":
            usage = event.usage
    return "".join(text), calls, usage, last


# -- plain chat ------------------------------------------------------------------


async def test_it_answers_a_plain_chat(harness):
    harness.script(FakeReply(text="Hello there, world.", input_tokens=21, output_tokens=5))
    result = await get_adapter(harness.adapter_config()).chat(ask(harness))
    assert result.finish_reason == "stop"
    assert result.usage.output_tokens > 0 and result.usage.input_tokens > 0
    if harness.scriptable:
        assert result.content == "Hello there, world."
        assert (result.usage.input_tokens, result.usage.output_tokens) == (21, 5)
    else:
        assert result.content


async def test_it_reuses_one_client_per_configuration(harness):
    config = harness.adapter_config()
    assert get_adapter(config) is get_adapter(config)
    changed = harness.adapter_config(credential="a-rotated-credential")
    assert get_adapter(changed) is not get_adapter(config) or harness.kind in ("demo", "claude_agent")


# -- streaming -------------------------------------------------------------------


async def test_it_streams_text_deltas_then_usage_then_done(harness):
    harness.script(FakeReply(text="Streaming works in small pieces.", input_tokens=9, output_tokens=6))
    text, calls, usage, last = await collect(get_adapter(harness.adapter_config()), ask(harness))
    assert last.type == "done" and last.finish_reason == "stop"
    assert calls == {}
    assert usage is not None and usage.output_tokens > 0
    if harness.scriptable:
        assert text == "Streaming works in small pieces."
        assert (usage.input_tokens, usage.output_tokens) == (9, 6)
    else:
        assert text


async def test_stream_and_chat_agree(harness):
    adapter = get_adapter(harness.adapter_config())
    harness.script(FakeReply(text="Same answer either way."), FakeReply(text="Same answer either way."))
    result = await adapter.chat(ask(harness, "Agree?"))
    text, _, _, _ = await collect(adapter, ask(harness, "Agree?"))
    assert text == result.content


# -- tools -----------------------------------------------------------------------


async def test_a_tool_round_trip_reaches_an_answer(harness):
    adapter = get_adapter(harness.adapter_config())
    harness.script(
        FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})]),
        FakeReply(text="It is sunny in Paris."),
    )
    first = await adapter.chat(ask(harness, "Weather in Paris?", tools=[WEATHER]))
    assert first.finish_reason == "tool_calls"
    assert [c.name for c in first.tool_calls] == ["get_weather"]
    call = first.tool_calls[0]
    assert call.id
    args = json.loads(call.arguments)
    assert set(args) == {"city"}
    if harness.scriptable:
        assert args == {"city": "Paris"}

    follow_up = ask(harness, "Weather in Paris?", tools=[WEATHER])
    follow_up.messages += [
        Message(role="assistant", content=None, tool_calls=[call]),
        Message(role="tool", tool_call_id=call.id, content='{"sky": "sunny"}'),
    ]
    answer = await adapter.chat(follow_up)
    assert answer.finish_reason == "stop"
    assert answer.content
    if harness.scriptable:
        assert answer.content == "It is sunny in Paris."


async def test_parallel_tool_calls_come_back_together(harness):
    harness.script(
        FakeReply(
            text="",
            tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}), FakeToolCall("get_time", {"tz": "CET"})],
        )
    )
    result = await get_adapter(harness.adapter_config()).chat(ask(harness, "Both?", tools=[WEATHER, TIME]))
    assert sorted(c.name for c in result.tool_calls) == ["get_time", "get_weather"]
    assert len({c.id for c in result.tool_calls}) == 2


async def test_parallel_tool_calls_stream_as_separate_indexes(harness):
    harness.script(
        FakeReply(
            text="",
            tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}), FakeToolCall("get_time", {"tz": "CET"})],
        )
    )
    _, calls, _, last = await collect(
        get_adapter(harness.adapter_config()), ask(harness, "Both?", tools=[WEATHER, TIME])
    )
    assert last.type == "done" and last.finish_reason == "tool_calls"
    assert sorted(c["name"] for c in calls.values()) == ["get_time", "get_weather"]
    for call in calls.values():
        assert call["id"]
        assert isinstance(json.loads(call["arguments"]), dict)
    if harness.scriptable:
        by_name = {c["name"]: json.loads(c["arguments"]) for c in calls.values()}
        assert by_name == {"get_weather": {"city": "Oslo"}, "get_time": {"tz": "CET"}}


# -- images ----------------------------------------------------------------------

PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR-a-fake-pixel").decode()


async def test_an_image_reaches_the_provider_in_its_own_format(harness):
    adapter = get_adapter(harness.adapter_config())
    if not adapter.capabilities.images:
        pytest.skip(f"{harness.kind} declares no image input")
    harness.script(FakeReply(text="A single pixel."))
    parts = [TextPart("What is in this picture?"), ImagePart(url=f"data:image/png;base64,{PIXEL}")]
    result = await adapter.chat(ChatRequest(model=harness.model, messages=[Message(role="user", content=parts)]))
    assert result.content == "A single pixel."
    # Every provider carries the bytes base64-encoded in its JSON, whatever the field is called.
    assert PIXEL in json.dumps(harness.requests[-1]["body"])


# -- cancellation ----------------------------------------------------------------


def _stopped_early(harness) -> bool:
    """Whether the fake saw its last stream closed by the client before it finished."""
    last = harness.streams[-1] if harness.streams else {}
    if "outcome" in last:
        return last["outcome"] == "closed"
    return bool(last.get("closed")) and not last.get("completed")


async def test_closing_a_stream_early_stops_the_providers_stream(harness):
    if not hasattr(harness, "streams"):
        pytest.skip(f"{harness.kind} has no HTTP stream (its own tests close its process)")
    harness.script(FakeReply(text="word " * 300, chunk_size=5, chunk_delay=0.01))
    stream = get_adapter(harness.adapter_config()).stream(ask(harness))
    async for event in stream:
        if event.type == "delta":
            break
    await stream.aclose()
    deadline = time.monotonic() + 5
    while not _stopped_early(harness) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _stopped_early(harness)


# -- usage -----------------------------------------------------------------------


async def test_usage_counts_cached_and_reasoning_tokens(harness):
    harness.script(FakeReply(text="Cached.", input_tokens=100, output_tokens=20, cached_tokens=60, reasoning_tokens=7))
    result = await get_adapter(harness.adapter_config()).chat(ask(harness))
    if not harness.scriptable:  # the demo has no cache and no reasoning
        assert (result.usage.cached_tokens, result.usage.reasoning_tokens) == (0, 0)
        assert result.usage.input_tokens > 0
        return
    assert result.usage.input_tokens == 100
    assert result.usage.cached_tokens == 60
    assert result.usage.output_tokens == 20
    if harness.reports_reasoning_tokens:
        assert result.usage.reasoning_tokens == 7


# -- errors ----------------------------------------------------------------------

ERROR_CASES = {
    "rate_limited": (Fault("status", status=429, retry_after=2, message="slow down"), True),
    "unavailable": (Fault("status", status=503, message="overloaded"), True),
    "server_error": (Fault("status", status=500, message="boom"), True),
    "bad_request": (Fault("status", status=400, message="bad field"), False),
    "auth": (Fault("status", status=401, message="bad key"), False),
}
EXPECTED_KIND = {"server_error": "unavailable"}


@pytest.mark.parametrize("case", list(ERROR_CASES))
async def test_errors_map_to_the_taxonomy(harness, case):
    fault, retryable = ERROR_CASES[case]
    harness.script(fault)
    with pytest.raises(ProviderError) as caught:
        await get_adapter(harness.adapter_config()).chat(ask(harness))
    error = caught.value
    assert error.kind == EXPECTED_KIND.get(case, case)
    assert error.retryable is retryable
    if case == "rate_limited" and harness.scriptable:
        assert error.retry_after == 2


@pytest.mark.parametrize("case", ["rate_limited", "unavailable"])
async def test_stream_errors_before_any_token_are_error_events(harness, case):
    harness.script(ERROR_CASES[case][0])
    _, _, _, last = await collect(get_adapter(harness.adapter_config()), ask(harness))
    assert last.type == "error"
    assert last.error.kind == case


async def test_context_length_is_its_own_kind(harness):
    harness.script(harness.context_length_fault())
    with pytest.raises(ProviderError) as caught:
        await get_adapter(harness.adapter_config()).chat(ask(harness))
    assert caught.value.kind == "context_length"
    assert caught.value.retryable is False


async def test_a_stalled_provider_times_out(harness):
    harness.script(Fault("stall", seconds=5))
    config = harness.adapter_config(read_timeout=0.5)
    with pytest.raises(ProviderError) as caught:
        await get_adapter(config).chat(ask(harness))
    assert caught.value.kind == "timeout"
    assert caught.value.retryable is True


async def test_a_stream_cut_mid_answer_ends_in_an_error_event(harness):
    harness.script(Fault("cut", after_chunks=2, reply=FakeReply(text="This answer will be cut off early.")))
    text, _, _, last = await collect(get_adapter(harness.adapter_config()), ask(harness))
    assert last.type == "error"
    assert last.error.retryable is True
    assert text  # what arrived before the cut was delivered


async def test_malformed_replies_are_provider_errors_not_crashes(harness):
    harness.script(Fault("malformed"))
    with pytest.raises(ProviderError) as caught:
        await get_adapter(harness.adapter_config()).chat(ask(harness))
    assert caught.value.kind == "unavailable"


async def test_errors_never_carry_the_credential(harness):
    canary = "sk-canary-DO-NOT-LEAK-0123456789abcdef"
    harness.script(Fault("status", status=401, message="invalid key"))
    with pytest.raises(ProviderError) as caught:
        await get_adapter(harness.adapter_config(credential=canary)).chat(ask(harness))
    assert canary not in str(caught.value)
    assert canary not in repr(caught.value)
    assert canary not in repr(harness.adapter_config(credential=canary))
