"""Personas routed to each real provider kind, through the gateway's OpenAI
endpoint, against the wire-level fakes: one tool conversation, the same answer
shape from every provider; and a canary credential that never leaks."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from budgets.models import Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.common import FakeReply, FakeToolCall, Fault
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

CANARY = {
    "openai": "sk-canary-openai-0123456789abcdefghij",
    "anthropic": "sk-ant-canary-anthropic-0123456789abcdef",
    "gemini": "AIza-canary-gemini-0123456789abcdefghij",
}
FAKE_CLASSES = {"openai": FakeOpenAIServer, "anthropic": FakeAnthropicServer, "gemini": FakeGeminiServer}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
]


@pytest.fixture(scope="module")
def fakes():
    started = {kind: cls().start() for kind, cls in FAKE_CLASSES.items()}
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture
def routed(fakes, world):
    """One persona per provider kind: `via-openai`, `via-anthropic`, `via-gemini`."""
    for kind, fake in fakes.items():
        fake.reset()
        base_url = fake.base_url + "/v1" if kind == "openai" else fake.base_url
        provider = Provider(name=kind, kind=kind, base_url=base_url, read_timeout=5)
        provider.set_credential(CANARY[kind])
        provider.save()
        Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
        persona = Persona.objects.create(slug=f"via-{kind}")
        RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
    return fakes


def sdk(live, key):
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("kind", sorted(FAKE_CLASSES))
def test_one_tool_conversation_gives_openai_tool_calls_from_every_provider(live, world, routed, kind):
    fake = routed[kind]
    fake.script(
        FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}),
                                       FakeToolCall("get_time", {"tz": "CET"})]),
        FakeReply(text="Oslo is sunny at noon."),
    )
    client = sdk(live, world.red_key)
    messages = [{"role": "user", "content": "Weather and time in Oslo?"}]
    first = client.chat.completions.create(model=f"via-{kind}", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = {c.function.name: json.loads(c.function.arguments) for c in choice.message.tool_calls}
    assert calls == {"get_weather": {"city": "Oslo"}, "get_time": {"tz": "CET"}}
    assert all(c.id and c.type == "function" for c in choice.message.tool_calls)

    messages.append(choice.message.model_dump(exclude_none=True))
    for call in choice.message.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": f"result of {call.function.name}"})
    final = client.chat.completions.create(model=f"via-{kind}", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "Oslo is sunny at noon."
    # the provider received both tool results, in its own format
    assert "result of get_time" in json.dumps(fake.requests[-1]["body"])
    rows = list(Usage.objects.filter(persona=f"via-{kind}"))
    assert len(rows) == 2 and {r.provider for r in rows} == {kind} and all(r.cost_usd > 0 for r in rows)


@pytest.mark.parametrize("kind", sorted(FAKE_CLASSES))
def test_streamed_tool_calls_arrive_in_openai_chunks(live, world, routed, kind):
    routed[kind].script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Rome"}),
                                                       FakeToolCall("get_time", {"tz": "UTC"})]))
    stream = sdk(live, world.red_key).chat.completions.create(
        model=f"via-{kind}", messages=[{"role": "user", "content": "both"}], tools=TOOLS, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(delta_call.index, {"name": "", "arguments": ""})
            entry["name"] += delta_call.function.name or ""
            entry["arguments"] += delta_call.function.arguments or ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls"
    assert {c["name"]: json.loads(c["arguments"]) for c in calls.values()} == {
        "get_weather": {"city": "Rome"}, "get_time": {"tz": "UTC"}}


ERROR_PATHS = [
    Fault("status", status=401, message="Incorrect API key provided"),
    Fault("status", status=500, message="boom"),
    Fault("status", status=429, retry_after=1, message="slow down"),
    Fault("malformed"),
    Fault("cut", after_chunks=1, reply=FakeReply(text="this will be cut short")),
]


@pytest.mark.parametrize("kind", sorted(FAKE_CLASSES))
def test_the_provider_credential_never_leaks(live, world, routed, kind):
    fake = routed[kind]
    bodies = []
    for fault in ERROR_PATHS:
        fake.script(fault)
        stream = fault.kind == "cut"
        response = httpx.post(live.url + "/v1/chat/completions", timeout=10, headers={
            "Authorization": f"Bearer {world.red_key}"}, json={
            "model": f"via-{kind}", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
        bodies.append(response.text + json.dumps(dict(response.headers)))
    for path in ("/health", "/capabilities", "/v1/models", "/api/openapi.json"):
        bodies.append(httpx.get(live.url + path, headers={"Authorization": f"Bearer {world.red_key}"}).text)
    secret = CANARY[kind]
    assert fake.requests, "the fake was called"
    assert not any(secret in body for body in bodies)
    assert secret not in live.log_text()
    ledger = " ".join(f"{r.error_code} {r.error_message}" for r in Usage.objects.all())
    assert secret not in ledger and "provider_" in ledger


def test_capabilities_come_from_the_adapters(live, world, routed):
    body = httpx.get(live.url + "/capabilities", headers={"Authorization": f"Bearer {world.red_key}"}).json()
    assert set(body["providers"]) == {"demo", "openai", "anthropic", "gemini"}
    assert body["providers"]["demo"]["demo"] is True
    assert body["providers"]["openai"]["capabilities"]["json_schema"] is True
    assert body["providers"]["gemini"]["models"] == ["gemini-2.5-flash"]
    assert body["personas"]["via-anthropic"] == ["anthropic/" + routed["anthropic"].model]
    assert "base_url" not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)
