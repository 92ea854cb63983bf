"""Limits refuse with a 413/400 envelope before any provider is called: the
body size, the number of messages, max_tokens against the persona's and the
key's caps, the number, size and depth of tool definitions. The persona
routes to a fake OpenAI server whose call count proves it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from django.conf import settings

from accounts.models import ApiKey
from budgets.models import Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.streaming_support import chat_frame, open_socket

ROUTES = {  # label -> (path, body for n messages and max_tokens, where the error code is)
    "openai": ("/v1/chat/completions", lambda msgs, mt: {"model": "capped", "messages": msgs, "max_tokens": mt}),
    "native": ("/api/v1/chat", lambda msgs, mt: {"persona": "capped", "messages": msgs, "max_tokens": mt}),
    "anthropic": ("/v1/messages", lambda msgs, mt: {"model": "capped", "messages": msgs, "max_tokens": mt or 50}),
}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def capped(fake, world):
    fake.reset()
    provider = Provider.objects.create(name="fake", kind="openai", base_url=fake.base_url + "/v1")
    provider.set_credential("sk-fake")
    provider.save()
    Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    persona = Persona.objects.create(slug="capped", max_output_tokens=100)
    RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
    return fake


def post(live, route: str, key: str, body=None, content: bytes | None = None) -> httpx.Response:
    path = ROUTES[route][0]
    return httpx.post(live.url + path, json=body, content=content, timeout=30,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def code_of(route: str, response: httpx.Response) -> str:
    error = response.json()["error"]
    return error["details"]["error_code"] if route == "anthropic" else error["code"]


@pytest.mark.parametrize("route", list(ROUTES))
def test_over_the_limits_is_refused_before_the_provider(live, world, capped, route):
    build = ROUTES[route][1]
    too_big = b'{"messages": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b'"}'
    refusals = {
        "body": post(live, route, world.red_key, content=too_big),
        "messages": post(live, route, world.red_key, build(HI * (settings.EP_MAX_MESSAGES + 1), 10)),
        "max_tokens": post(live, route, world.red_key, build(HI, 101)),
    }
    assert {k: r.status_code for k, r in refusals.items()} == {"body": 413, "messages": 400, "max_tokens": 400}
    assert {k: code_of(route, r) for k, r in refusals.items()} == {
        "body": "request_too_large", "messages": "too_many_messages", "max_tokens": "max_tokens_too_large"}
    assert "cap of 100" in refusals["max_tokens"].text
    assert capped.call_count == 0  # refused before any provider call
    answer = post(live, route, world.red_key, build(HI, 100))
    assert answer.status_code == 200, answer.text
    assert capped.call_count == 1 and capped.requests[0]["body"]["max_tokens"] == 100


def test_a_keys_cap_is_the_tighter_one(live, world, capped):
    key, raw = ApiKey.issue(team=world.red, name="small", max_output_tokens=40)
    refused = post(live, "openai", raw, ROUTES["openai"][1](HI, 41))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "max_tokens_too_large"
    assert "cap of 40" in refused.json()["error"]["message"]
    assert capped.call_count == 0
    assert post(live, "openai", raw, {"model": "capped", "messages": HI}).status_code == 200
    assert capped.requests[-1]["body"]["max_tokens"] == 40  # no max_tokens asked: the cap is sent
    assert post(live, "openai", world.red_key, {"model": "capped", "messages": HI}).status_code == 200
    assert capped.requests[-1]["body"]["max_tokens"] == 100  # another key: the persona's cap


def nested_schema(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def tools_for(route: str, tools: list[tuple[str, str, dict]]) -> list[dict]:
    if route == "anthropic":
        return [{"name": n, "description": d, "input_schema": p} for n, d, p in tools]
    return [{"type": "function", "function": {"name": n, "description": d, "parameters": p}} for n, d, p in tools]


TOOL_CAPS = {  # case -> (tools, code, what the message names)
    "129 tools": ([(f"t{i}", "", {"type": "object"}) for i in range(129)], "too_many_tools", "at most 128"),
    "a 300 KB description": ([("big", "x" * 300_000, {"type": "object"})], "tools_too_large", "at most 262144"),
    "a schema 40 levels deep": ([("deep", "", nested_schema(40))], "tool_schema_too_deep", "at most 64"),
}


@pytest.mark.parametrize("route", [*ROUTES, "websocket"])
def test_tool_definitions_are_capped_on_every_surface_before_the_provider(live, world, capped, route):
    async def over_the_socket(tools: list[dict]) -> dict:
        async with open_socket(live, key=world.red_key) as ws:
            await ws.send(chat_frame(1, "capped", "hi", tools=tools))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    for case, (tools, code, cap) in TOOL_CAPS.items():
        wire = tools_for(route, tools)
        if route == "websocket":
            frame = asyncio.run(over_the_socket(wire))
            status, got, message = 400, frame["error"]["code"], frame["error"]["message"]
        else:
            body = {**ROUTES[route][1](HI, 50), "tools": wire}
            response = post(live, route, world.red_key, body)
            status, got = response.status_code, code_of(route, response)
            message = response.json()["error"]["message"]
        assert (case, status, got) == (case, 400, code)
        assert cap in message, message
    assert capped.call_count == 0
    assert Usage.objects.filter(status="refused").count() == len(TOOL_CAPS)
    within = tools_for(route, [(f"t{i}", "a tool", nested_schema(32)) for i in range(128)])
    if route != "websocket":
        answer = post(live, route, world.red_key, {**ROUTES[route][1](HI, 50), "tools": within})
        assert answer.status_code == 200, answer.text
        assert len(capped.requests[0]["body"]["tools"]) == 128
