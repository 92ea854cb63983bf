"""The Anthropic-compatible endpoint (/v1/messages), driven by the official
`anthropic` SDK against a live daphne server, for personas routed to the
anthropic, openai and gemini fakes."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import anthropic
import httpx
import pytest

from budgets.models import Usage
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.common import FakeReply, FakeToolCall, Fault
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

INPUT_PRICE, OUTPUT_PRICE = Decimal(3), Decimal(15)  # USD per million tokens
KINDS = ("anthropic", "openai", "gemini")
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PIXEL = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")
).decode()


@pytest.fixture(scope="module")
def fakes():
    servers = {"anthropic": FakeAnthropicServer(), "openai": FakeOpenAIServer(), "gemini": FakeGeminiServer()}
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


def add_provider(kind: str, fake):
    from providers.models import Model, Provider

    base_url = fake.base_url + "/v1" if kind == "openai" else fake.base_url
    provider = Provider(name=kind, kind=kind, base_url=base_url, read_timeout=10, connect_timeout=2)
    provider.set_credential(f"{kind}-test-credential")
    provider.save()
    Model.objects.create(
        provider=provider, name=fake.model, input_price=INPUT_PRICE, output_price=OUTPUT_PRICE
    )
    return provider


def add_persona(slug: str, *steps, system_prompt: str = ""):
    from personas.models import Persona, RouteStep

    persona = Persona.objects.create(slug=slug, name=slug, system_prompt=system_prompt)
    for position, (provider, model) in enumerate(steps):
        RouteStep.objects.create(persona=persona, position=position, provider=provider, model=model)
    return persona


@pytest.fixture
def routed(live, world, fakes):
    """One persona per fake: via-anthropic, via-openai, via-gemini; fakes reset."""
    providers = {}
    for kind, fake in fakes.items():
        fake.reset()
        providers[kind] = add_provider(kind, fake)
        add_persona(f"via-{kind}", (providers[kind], fake.model))
    return providers


def sdk(live, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live.url, api_key=key, max_retries=0)


def expected_cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * INPUT_PRICE + output_tokens * OUTPUT_PRICE) / 1_000_000


def assert_row(kind: str, fakes, *, stream: bool, input_tokens: int = 12, output_tokens: int = 8):
    row = Usage.objects.get()
    assert (row.persona, row.provider, row.model, row.status) == (
        f"via-{kind}",
        kind,
        fakes[kind].model,
        "ok",
    )
    assert (row.stream, row.endpoint) == (stream, "v1.messages")
    assert (row.input_tokens, row.output_tokens) == (input_tokens, output_tokens)
    assert row.cost_usd == expected_cost(input_tokens, output_tokens)
    return row


# -- the SDK, every provider --------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_sync_sdk_gets_a_message_from_every_provider(live, world, fakes, routed, kind):
    fakes[kind].script(FakeReply(text=f"Hello from {kind}."))
    raw = sdk(live, world.red_key).messages.with_raw_response.create(
        model=f"via-{kind}", max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    )
    message = raw.parse()
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == f"Hello from {kind}."
    assert (message.role, message.stop_reason, message.model) == ("assistant", "end_turn", fakes[kind].model)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 8)
    row = assert_row(kind, fakes, stream=False)
    assert raw.headers["request-id"] == raw.headers["x-request-id"] == row.request_id
    assert message.id == "msg_" + row.request_id[4:]
    assert Decimal(raw.headers["x-ep-cost-usd"]) == row.cost_usd


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_the_async_sdk_gets_a_message_from_every_provider(live, world, fakes, routed, kind):
    client = anthropic.AsyncAnthropic(base_url=live.url, api_key=world.red_key, max_retries=0)
    async with client:
        message = await client.messages.create(
            model=f"persona/via-{kind}", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
        )
    assert message.content[0].text == "Hello from the fake provider."
    await _assert_row_async(kind, fakes)


async def _assert_row_async(kind, fakes):
    from asgiref.sync import sync_to_async

    await sync_to_async(assert_row)(kind, fakes, stream=False)


@pytest.mark.parametrize("kind", KINDS)
def test_the_sdk_streams_text_and_final_usage_from_every_provider(live, world, fakes, routed, kind):
    fakes[kind].script(
        FakeReply(text="Streaming along nicely.", input_tokens=20, output_tokens=6, chunk_size=5)
    )
    with sdk(live, world.red_key).messages.stream(
        model=f"via-{kind}", max_tokens=100, messages=[{"role": "user", "content": "Stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Streaming along nicely." == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 6)
    row = assert_row(kind, fakes, stream=True, input_tokens=20, output_tokens=6)
    assert row.ttft_ms is not None


def test_the_raw_stream_is_anthropics_event_sequence(live, world, fakes, routed):
    fakes["openai"].script(
        FakeReply(text="Checking.", tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})], chunk_size=4)
    )
    events = list(
        sdk(live, world.red_key).messages.create(
            model="via-openai",
            max_tokens=100,
            stream=True,
            tools=[WEATHER],
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        )
    )
    names = [e.type for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [b.type for b in starts] == ["text", "tool_use"]
    assert starts[1].name == "get_weather" and starts[1].input == {}
    stops = [e.index for e in events if e.type == "content_block_stop"]
    assert stops == [0, 1]
    pieces = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(pieces) >= 1 and json.loads("".join(pieces)) == {"city": "Paris"}
    assert events[-2].delta.stop_reason == "tool_use" and events[-2].usage.output_tokens == 8


# -- tools ------------------------------------------------------------------------------


def _tool_result_as_received(kind: str, body: dict) -> tuple[str, str]:
    """(tool call id, result text) as the provider received them."""
    if kind == "anthropic":
        block = body["messages"][-1]["content"][0]
        return block["tool_use_id"], block["content"]
    if kind == "openai":
        message = body["messages"][-1]
        return message["tool_call_id"], message["content"]
    part = body["contents"][-1]["parts"][0]["functionResponse"]
    return part.get("id", ""), json.dumps(part["response"])


@pytest.mark.parametrize("kind", KINDS)
def test_a_streamed_tool_round_trip_works_with_every_provider(live, world, fakes, routed, kind):
    fake = fakes[kind]
    fake.script(
        FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})]),
        FakeReply(text="It is sunny in Paris."),
    )
    client = sdk(live, world.red_key)
    question = {"role": "user", "content": "Weather in Paris?"}
    with client.messages.stream(
        model=f"via-{kind}", max_tokens=200, tools=[WEATHER], messages=[question]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    answer = client.messages.create(
        model=f"via-{kind}",
        max_tokens=200,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 24C"}],
            },
        ],
    )
    assert answer.content[0].text == "It is sunny in Paris."
    call_id, result = _tool_result_as_received(kind, fake.requests[-1]["body"])
    assert "sunny, 24C" in result
    assert call_id in (use.id, "")  # gemini pairs results by name; the others by id
    assert list(Usage.objects.values_list("status", "stream")) in (
        [("ok", True), ("ok", False)],
        [("ok", False), ("ok", True)],
    )


def test_request_fields_reach_an_anthropic_provider(live, world, fakes, routed):
    add_persona("precise", (routed["anthropic"], fakes["anthropic"].model), system_prompt="Persona rules.")
    sdk(live, world.red_key).messages.create(
        model="precise",
        max_tokens=77,
        system=[{"type": "text", "text": "Client rules.", "cache_control": {"type": "ephemeral"}}],
        stop_sequences=["END"],
        metadata={"user_id": "agent-7"},
        extra_body={"temperature": 0.2},
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                ],
            }
        ],
    )
    sent = fakes["anthropic"].requests[-1]["body"]
    # The client's cache_control breakpoint passes through, so the system prompt goes as blocks.
    assert sent["system"] == [{"type": "text", "text": "Persona rules."},
                              {"type": "text", "text": "Client rules.", "cache_control": {"type": "ephemeral"}}]
    assert (sent["max_tokens"], sent["stop_sequences"], sent["temperature"]) == (77, ["END"], 0.2)
    assert sent["metadata"] == {"user_id": "agent-7"}
    assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert sent["messages"][0]["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": PIXEL,
    }


def test_request_fields_reach_an_openai_provider(live, world, fakes, routed):
    sdk(live, world.red_key).messages.create(
        model="via-openai",
        max_tokens=55,
        system="Be brief.",
        stop_sequences=["END"],
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                    {"type": "text", "text": "Describe"},
                ],
            }
        ],
    )
    sent = fakes["openai"].requests[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][0]["image_url"]["url"] == f"data:image/png;base64,{PIXEL}"
    assert sent["stop"] == ["END"] and sent["tool_choice"] == "required"
    assert sent["parallel_tool_calls"] is False
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


def test_claude_style_history_converts_for_an_openai_provider(live, world, fakes, routed):
    # What Claude clients send back: thinking blocks, a system turn, a failed tool's result.
    history = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Weather?", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Call the tool.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": [{"type": "text", "text": "timeout"}],
                }
            ],
        },
        {"role": "system", "content": [{"type": "text", "text": "Answer anyway."}]},
    ]
    sdk(live, world.red_key).messages.create(
        model="via-openai", max_tokens=50, tools=[WEATHER], messages=history
    )
    sent = fakes["openai"].requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "system"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert "Call the tool." not in json.dumps(sent)
    assert sent[2]["tool_call_id"] == "toolu_1" and "Error: " in json.dumps(sent[2]["content"])
    assert "timeout" in json.dumps(sent[2]["content"])


def test_count_tokens_estimates_the_prompt_the_persona_would_send(live, world, fakes, routed):
    client = sdk(live, world.red_key)
    short = client.messages.count_tokens(model="via-openai", messages=[{"role": "user", "content": "Hi"}])
    long = client.messages.count_tokens(
        model="via-openai", tools=[WEATHER], messages=[{"role": "user", "content": "Hi " * 400}]
    )
    assert 1 <= short.input_tokens < 10
    assert long.input_tokens >= 300 + short.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nobody", messages=[{"role": "user", "content": "Hi"}])
    assert fakes["openai"].call_count == 0  # counting calls no provider
    rows = list(Usage.objects.values_list("endpoint", "status", "cost_usd"))
    assert rows.count(("v1.messages.count_tokens", "ok", Decimal(0))) == 2 and len(rows) == 3


# -- the pipeline: fallback, faults ---------------------------------------------------------


def test_a_failing_step_falls_back_and_answers_in_anthropic_format(live, world, fakes, routed):
    add_persona(
        "sturdy", (routed["anthropic"], fakes["anthropic"].model), (routed["gemini"], fakes["gemini"].model)
    )
    fakes["anthropic"].script(*[Fault("status", status=529, message="Overloaded")] * 5)
    fakes["gemini"].script(FakeReply(text="Gemini stepped in."))
    message = sdk(live, world.red_key).messages.create(
        model="sturdy", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text == "Gemini stepped in."
    row = Usage.objects.get()
    assert (row.persona, row.provider, row.status) == ("sturdy", "gemini", "ok")
    assert row.attempts >= 2 and row.cost_usd == expected_cost(12, 8)


def test_a_stream_cut_after_content_ends_in_an_error_event(live, world, fakes, routed):
    fakes["anthropic"].script(
        Fault("cut", after_chunks=2, reply=FakeReply(text="abcdefghijklmnop", chunk_size=2))
    )
    with httpx.stream(
        "POST",
        live.url + "/v1/messages",
        timeout=10,
        headers={"x-api-key": world.red_key},
        json={
            "model": "via-anthropic",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    assert names[:2] == ["message_start", "content_block_start"] and "content_block_delta" in names
    assert names[-1] == "error" and "message_stop" not in names
    error = json.loads(lines[-1][6:])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert error["request_id"] == response.headers["request-id"]
    row = Usage.objects.get()
    assert (row.status, row.stream) == ("error", True) and row.output_tokens > 0


def test_the_sdk_raises_on_an_in_band_stream_error(live, world, fakes, routed):
    fakes["anthropic"].script(Fault("cut", after_chunks=1, reply=FakeReply(text="abcdefgh", chunk_size=2)))
    stream = sdk(live, world.red_key).messages.stream(
        model="via-anthropic", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    )
    with pytest.raises(anthropic.APIStatusError) as caught, stream as events:
        list(events.text_stream)
    assert caught.value.type == "api_error"


def test_a_stream_that_cannot_start_is_an_http_error(live, world, fakes, routed):
    fakes["openai"].script(*[Fault("status", status=429, retry_after=7, message="slow down")] * 5)
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk(live, world.red_key).messages.create(
            model="via-openai", max_tokens=50, stream=True, messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.type == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["request_id"] == caught.value.request_id
    row = Usage.objects.get()
    assert (row.status, row.http_status, row.stream) == ("error", 429, True)


# -- authentication and errors ------------------------------------------------------------------


@pytest.mark.parametrize("header", ["x-api-key", "Authorization"])
def test_either_auth_header_is_accepted(live, world, routed, header):
    value = world.red_key if header == "x-api-key" else f"Bearer {world.red_key}"
    response = httpx.post(
        live.url + "/v1/messages",
        headers={header: value},
        timeout=10,
        json={"model": "via-openai", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    assert Usage.objects.get().team == world.red


def test_a_wrong_key_is_an_anthropic_authentication_error(live, world, routed):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk(live, "ep-not-a-real-key").messages.create(
            model="via-openai", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.type == "authentication_error"
    assert caught.value.error_code == "invalid_api_key"
    assert caught.value.request_id.startswith("req_")
    assert Usage.objects.count() == 0  # nobody to bill


@pytest.mark.parametrize(
    "model, error_class, error_type, code",
    [
        ("astronaut", anthropic.NotFoundError, "not_found_error", "model_not_found"),
        (
            "openai/gpt-4o-mini",
            anthropic.PermissionDeniedError,
            "permission_error",
            "direct_model_not_allowed",
        ),
    ],
)
def test_routing_refusals_are_anthropic_errors(live, world, routed, model, error_class, error_type, code):
    with pytest.raises(error_class) as caught:
        sdk(live, world.red_key).messages.create(
            model=model, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert (caught.value.type, caught.value.error_code) == (error_type, code)
    row = Usage.objects.get()
    assert (row.status, row.error_code) == ("refused", code)


def test_a_direct_provider_model_works_with_the_direct_scope(live, world, fakes, routed):
    message = sdk(live, world.direct_key).messages.create(
        model=f"gemini/{fakes['gemini'].model}", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert message.content[0].text == "Hello from the fake provider."
    assert Usage.objects.get().cost_usd == expected_cost(12, 8)


DOCUMENT = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}


def body(without: str = "", **fields) -> bytes:
    """A valid request with some fields replaced (or one left out), as JSON bytes."""
    request = {
        "model": "via-openai",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
    } | fields
    request.pop(without, None)
    return json.dumps(request).encode()


BAD_BODIES = {
    "malformed json": (b'{"model": "via-openai", "messages": [', 400, "invalid_json"),
    "missing max_tokens": (body(without="max_tokens"), 400, "invalid_request"),
    "wrong types": (body(model=5, max_tokens="many", messages="hello"), 400, "invalid_request"),
    "empty messages": (body(messages=[]), 400, "invalid_request"),
    "bad role": (body(messages=[{"role": "wizard", "content": "x"}]), 400, "invalid_request"),
    "bad block": (body(messages=[{"role": "user", "content": [{"type": "text"}]}]), 400, "invalid_request"),
    "unsupported block": (body(messages=[{"role": "user", "content": [DOCUMENT]}]), 400, "invalid_request"),
    "server tool": (body(tools=[WEB_SEARCH]), 400, "invalid_request"),
    "temperature out of range": (body(temperature=3), 400, "invalid_request"),
    "json array": (b"[1, 2, 3]", 400, "invalid_request"),
    "not utf-8": (b"\xff\xfe\x00garbage", 400, "invalid_json"),
    "huge body": (
        body(messages=[{"role": "user", "content": "x" * (9 * 1024 * 1024)}]),
        413,
        "request_too_large",
    ),
}
ERROR_TYPE_OF = {400: "invalid_request_error", 413: "request_too_large"}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_input_gets_a_4xx_anthropic_error_and_one_row(live, world, fakes, routed, case):
    body, status, code = BAD_BODIES[case]
    response = httpx.post(
        live.url + "/v1/messages",
        content=body,
        timeout=30,
        headers={"x-api-key": world.red_key, "Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == ERROR_TYPE_OF[status]
    assert payload["error"]["message"] and payload["error"]["details"]["error_code"] == code
    assert payload["request_id"] == response.headers["x-request-id"] == response.headers["request-id"]
    row = Usage.objects.get()
    assert (row.status, row.http_status, row.error_code) == ("refused", status, code)
    assert fakes["openai"].call_count == 0


@pytest.mark.parametrize(
    "status, error_type",
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
        (422, "invalid_request_error"),
    ],
)
def test_each_status_has_its_anthropic_error_type(status, error_type):
    from api.anthropic_compat import error_json

    body = error_json(status, "m", "c", "req_1")
    assert body == {
        "type": "error",
        "request_id": "req_1",
        "error": {"type": error_type, "message": "m", "details": {"error_code": "c"}},
    }


def test_other_endpoints_keep_the_openai_envelope(live, world):
    response = httpx.post(
        live.url + "/v1/chat/completions",
        content=b"{",
        timeout=10,
        headers={"Authorization": f"Bearer {world.red_key}"},
    )
    assert response.status_code == 400
    assert "type" not in response.json() and response.json()["error"]["code"] == "invalid_json"
