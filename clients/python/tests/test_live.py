"""ep_client against a running platform (EP_BASE_URL, EP_API_KEY; see conftest):
sync and async chat, streaming, tools, run tagging, retries and typed errors.

The assertions hold for any provider behind the personas; the tool tests
expect the model to call the one tool it is offered (the demo provider does).
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import httpx
import pytest
from ep_client import (
    AsyncExecutionPlatformClient,
    AuthenticationError,
    ExecutionPlatformClient,
    ExecutionPlatformError,
    InvalidRequestError,
    NotFoundError,
    new_run_id,
)

pytestmark = pytest.mark.live

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
UNKNOWN_PERSONA = "astronaut-that-does-not-exist"


def client(platform, **options) -> ExecutionPlatformClient:
    options.setdefault("persona", platform.persona)
    options.setdefault("api_key", platform.api_key)
    return ExecutionPlatformClient(platform.base_url, **options)


def async_client(platform, **options) -> AsyncExecutionPlatformClient:
    options.setdefault("persona", platform.persona)
    options.setdefault("api_key", platform.api_key)
    return AsyncExecutionPlatformClient(platform.base_url, **options)


def assert_answered(response, persona: str) -> None:
    assert response.text and str(response) == response.text
    assert response.persona == persona and response.provider and response.model
    assert response.finish_reason == "stop" and response.tool_calls == []
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert isinstance(response.cost_usd, Decimal) and response.cost_usd >= 0
    assert response.request_id.startswith("req_")


def assert_streamed(events: list) -> None:
    kinds = [e.type for e in events]
    assert kinds.count("delta") >= 1 and kinds[-1] == "done" and "usage" in kinds
    assert "".join(e.text for e in events if e.type == "delta")
    done = events[-1]
    assert done.finish_reason == "stop" and done.provider and done.request_id.startswith("req_")
    assert done.usage is not None and done.usage.output_tokens > 0


def assert_unknown_persona(error: NotFoundError, platform) -> None:
    assert isinstance(error, ExecutionPlatformError)
    assert (error.status, error.code) == (404, "model_not_found")
    assert UNKNOWN_PERSONA in error.message and platform.persona in error.message  # it lists the known ones
    assert error.request_id and error.request_id.startswith("req_")
    assert str(error).startswith("model_not_found: ")


# -- sync chat -------------------------------------------------------------------------------


def test_chat_returns_the_answer_with_who_served_it_and_what_it_cost(platform):
    with client(platform) as ep:
        response = ep.chat("Design a system")
    assert_answered(response, platform.persona)


def test_a_call_takes_messages_another_persona_a_system_prompt_and_openai_parameters(platform):
    with client(platform) as ep:
        response = ep.chat([{"role": "user", "content": "Review this: print('hi')"}], persona=platform.other_persona,
                           system="Answer in one sentence.", max_tokens=200, temperature=0.2)
    assert_answered(response, platform.other_persona)


def test_the_key_and_base_url_come_from_the_environment(platform, monkeypatch):
    monkeypatch.setenv("EP_BASE_URL", platform.base_url)
    monkeypatch.setenv("EP_API_KEY", platform.api_key)
    with ExecutionPlatformClient(persona=platform.persona) as ep:
        assert_answered(ep.chat("hi"), platform.persona)
    monkeypatch.delenv("EP_API_KEY")
    with pytest.raises(AuthenticationError) as caught:
        ExecutionPlatformClient(persona=platform.persona)
    assert caught.value.code == "missing_api_key"


def test_an_openai_style_base_url_is_accepted(platform):
    with ExecutionPlatformClient(platform.base_url.rstrip("/") + "/v1/", platform.persona,
                                 api_key=platform.api_key) as ep:
        assert ep.settings.base_url == platform.base_url.rstrip("/")
        assert_answered(ep.chat("hi"), platform.persona)


# -- streaming (sync) ------------------------------------------------------------------------


def test_a_stream_yields_deltas_usage_and_done(platform):
    with client(platform) as ep:
        events = list(ep.stream("Write a function that adds two numbers"))
    assert_streamed(events)


# -- tools -----------------------------------------------------------------------------------


def test_tool_calls_round_trip(platform):
    with client(platform) as ep:
        first = ep.chat("What is the weather in Paris? Use the tool.", tools=[WEATHER])
        assert first.finish_reason == "tool_calls"
        call = first.tool_calls[0]
        assert call.name == "get_weather" and call.id and "city" in call.parsed_arguments()
        messages = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}, first.message,
                    {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
        second = ep.chat(messages, tools=[WEATHER["function"]])  # the bare form is accepted too
    assert second.finish_reason == "stop" and second.text


def test_a_stream_delivers_tool_call_pieces(platform):
    with client(platform) as ep:
        events = list(ep.stream("What is the weather in Paris? Use the tool.", tools=[WEATHER]))
    calls = [e for e in events if e.type == "tool_call"]
    assert calls and calls[0].tool_call_id and calls[0].name == "get_weather"
    arguments = "".join(e.arguments for e in calls if e.index == calls[0].index)
    assert "city" in json.loads(arguments)
    assert events[-1].type == "done" and events[-1].finish_reason == "tool_calls"


# -- runs ------------------------------------------------------------------------------------


def _run(platform, run_id: str, requests: int) -> dict:
    """GET /api/v1/runs/{run_id} once it holds `requests` requests (a stream's is recorded just after it ends)."""
    deadline, headers = time.monotonic() + 10, {"Authorization": f"Bearer {platform.api_key}"}
    while True:
        response = httpx.get(f"{platform.base_url.rstrip('/')}/api/v1/runs/{run_id}", headers=headers, timeout=10)
        run = response.json() if response.status_code == 200 else {}
        if run.get("request_count", 0) >= requests or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_run_id_and_step_tag_each_request_as_one_run(platform):
    run_id = new_run_id()
    with client(platform, run_id=run_id) as ep:
        design = ep.chat("Design a URL shortener", step="design")
        list(ep.stream(f"Implement this design:\n\n{design}", persona=platform.other_persona, step=2))
    run = _run(platform, run_id, requests=2)
    assert run["run_id"] == run_id and run["request_count"] == 2 and run["status"] == "ok"
    assert [(r["step"], r["persona"]) for r in run["requests"]] == [
        ("design", platform.persona), ("2", platform.other_persona)]
    assert run["requests"][0]["request_id"] == design.request_id
    assert Decimal(run["requests"][0]["cost_usd"]) == design.cost_usd
    listed = httpx.get(f"{platform.base_url.rstrip('/')}/api/v1/runs", params={"limit": 500},
                       headers={"Authorization": f"Bearer {platform.api_key}"}, timeout=10).json()
    assert run_id in [r["run_id"] for r in listed["data"]]


# -- async -----------------------------------------------------------------------------------
# Each test drives the async client in its own event loop (asyncio.run): no plugin needed.


def test_the_async_client_chats(platform):
    async def chat():
        async with async_client(platform) as ep:
            return await ep.chat("Design a system"), await ep.chat("Review it", persona=platform.other_persona)

    first, second = asyncio.run(chat())
    assert_answered(first, platform.persona)
    assert_answered(second, platform.other_persona)


def test_the_async_client_streams(platform):
    async def stream():
        async with async_client(platform) as ep:
            return [event async for event in ep.stream("Write a haiku about queues")]

    assert_streamed(asyncio.run(stream()))


def test_the_async_client_streams_tool_calls(platform):
    async def stream():
        async with async_client(platform) as ep:
            return [event async for event in ep.stream("What is the weather in Paris? Use the tool.", tools=[WEATHER])]

    events = asyncio.run(stream())
    assert [e.name for e in events if e.type == "tool_call" and e.name] == ["get_weather"]
    assert events[-1].finish_reason == "tool_calls"


# -- errors ----------------------------------------------------------------------------------


def test_an_unknown_persona_is_a_not_found_error_with_code_model_not_found(platform):
    with client(platform, persona=UNKNOWN_PERSONA) as ep, pytest.raises(NotFoundError) as caught:
        ep.chat("hi")
    assert_unknown_persona(caught.value, platform)


def test_an_unknown_persona_in_a_stream_raises_before_any_event(platform):
    received = []
    with client(platform) as ep, pytest.raises(NotFoundError) as caught:
        received.extend(ep.stream("hi", persona=UNKNOWN_PERSONA))
    assert received == []
    assert_unknown_persona(caught.value, platform)


def test_the_async_client_raises_the_same_errors(platform):
    async def fail() -> tuple[NotFoundError, NotFoundError]:
        async with async_client(platform, persona=UNKNOWN_PERSONA) as ep:
            with pytest.raises(NotFoundError) as in_chat:
                await ep.chat("hi")
            with pytest.raises(NotFoundError) as in_stream:
                [event async for event in ep.stream("hi")]
        return in_chat.value, in_stream.value

    for error in asyncio.run(fail()):
        assert_unknown_persona(error, platform)


def test_a_wrong_key_is_an_authentication_error(platform):
    with client(platform, api_key="ep-not-a-real-key") as ep, pytest.raises(AuthenticationError) as caught:
        ep.chat("hi")
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")


def test_a_bad_parameter_is_an_invalid_request_error(platform):
    with client(platform) as ep, pytest.raises(InvalidRequestError) as caught:
        ep.chat("hi", temperature=9)
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    assert caught.value.request_id.startswith("req_")


# -- retries ---------------------------------------------------------------------------------


class FlakyTransport(httpx.HTTPTransport):
    """A real transport whose first `failures` connections are refused."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures, self.sends = failures, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sends += 1
        if self.sends <= self.failures:
            raise httpx.ConnectError("connection refused")
        return super().handle_request(request)


def test_connection_errors_are_retried_with_backoff(platform):
    transport = FlakyTransport(failures=2)
    with client(platform, transport=transport, backoff=0.01) as ep:
        assert_answered(ep.chat("hi"), platform.persona)
    assert transport.sends == 3


def test_http_errors_are_not_retried(platform):
    transport = FlakyTransport(failures=0)
    with client(platform, persona=UNKNOWN_PERSONA, transport=transport, backoff=0.01) as ep:
        with pytest.raises(NotFoundError):
            ep.chat("hi")
    assert transport.sends == 1
