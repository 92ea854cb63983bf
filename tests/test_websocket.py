"""ws /ws/v1/chat against a live daphne server, driven by the `websockets` client."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from budgets.models import Usage
from tests.fakes.common import FakeReply
from tests.fakes.openai_server import FakeOpenAIServer
from tests.streaming_support import chat_frame, frames_until_terminal, open_socket, route_persona_to_fake, wait_for


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture
def via_fake(fake, world):
    fake.reset()
    route_persona_to_fake(fake)
    return fake


def slow_demo(world, chunk_delay_ms: int = 15) -> None:
    world.demo.options = {"latency_ms": 0, "chunk_delay_ms": chunk_delay_ms}
    world.demo.save()


def by_id(frames: list[dict], request_id) -> list[dict]:
    return [f for f in frames if f["id"] == request_id]


def text_of(frames: list[dict]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


# -- streams ---------------------------------------------------------------------------------


def test_two_interleaved_streams_on_one_socket_arrive_complete_and_in_order(live, world):
    slow_demo(world)
    prompts = {"a": "Design the storage layer", 7: "Review the storage layer"}

    async def scenario():
        async with open_socket(live, key=world.red_key) as ws:
            await ws.send(chat_frame("a", "architect", prompts["a"]))
            await ws.send(chat_frame(7, "reviewer", prompts[7], metadata={"run_id": "run-42", "step": "s1"}))
            return await frames_until_terminal(ws, {"a", 7})

    frames = asyncio.run(scenario())
    ids_in_order = [f["id"] for f in frames if f["type"] == "delta"]
    first_seven, last_a = ids_in_order.index(7), len(ids_in_order) - 1 - ids_in_order[::-1].index("a")
    assert first_seven < last_a, "the two streams were not interleaved"
    for request_id, persona in (("a", "architect"), (7, "reviewer")):
        mine = by_id(frames, request_id)
        reference = httpx.post(live.url + "/api/v1/chat", headers={"Authorization": f"Bearer {world.red_key}"},
                               json={"persona": persona, "messages": [{"role": "user", "content": prompts[request_id]}]})
        assert text_of(mine) == reference.json()["content"]  # complete, and in order
        assert [f["type"] for f in mine][-2:] == ["usage", "done"]
        done = mine[-1]
        assert (done["persona"], done["provider"], done["finish_reason"]) == (persona, "demo", "stop")
        assert done["usage"]["output_tokens"] > 0 and float(done["usage"]["cost_usd"]) > 0
    rows = Usage.objects.filter(endpoint="ws.chat")
    assert sorted(rows.values_list("persona", "status", "stream")) == [
        ("architect", "ok", True), ("reviewer", "ok", True)]
    assert rows.get(persona="reviewer").run_id == "run-42"
    assert {r.request_id for r in rows} == {by_id(frames, i)[-1]["request_id"] for i in ("a", 7)}


def test_tool_calls_stream_as_tool_call_events(live, world):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

    async def scenario():
        async with open_socket(live, key=world.red_key) as ws:
            await ws.send(chat_frame("t", "developer", "Weather?", tools=tools))
            return await frames_until_terminal(ws, {"t"})

    frames = asyncio.run(scenario())
    calls = [f for f in frames if f["type"] == "tool_call"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "demo"})]
    assert calls[0]["tool_call_id"] and frames[-1]["finish_reason"] == "tool_calls"


# -- who may connect ---------------------------------------------------------------------------


def handshake_status(live, **kwargs) -> int:
    async def attempt():
        try:
            async with open_socket(live, **kwargs) as ws:
                return 101 if ws.subprotocol in (None, "ep.v1") else -1
        except InvalidStatus as refused:
            return refused.response.status_code

    return asyncio.run(attempt())


@pytest.mark.parametrize("case", ["wrong key", "no key", "key in the query string", "foreign origin",
                                  "revoked-looking key as subprotocol"])
def test_the_handshake_is_refused_before_accept(live, world, case):
    kwargs = {
        "wrong key": {"key": "ep-not-a-real-key"},
        "no key": {},
        "key in the query string": {"additional_headers": {}, "key": world.red_key},
        "foreign origin": {"key": world.red_key, "origin": "https://evil.example"},
        "revoked-looking key as subprotocol": {"subprotocols": ["ep.v1", "ep.key.ep-nope"]},
    }[case]
    if case == "key in the query string":
        status = asyncio.run(_query_key_status(live, world.red_key))
    else:
        status = handshake_status(live, **kwargs)
    assert status == 403
    assert Usage.objects.count() == 0


async def _query_key_status(live, key: str) -> int:
    from websockets.asyncio.client import connect

    from tests.streaming_support import ws_url

    try:
        async with connect(ws_url(live, f"/ws/v1/chat?api_key={key}"), additional_headers={
                "Authorization": f"Bearer {key}"}, open_timeout=5):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def test_browsers_send_the_key_as_a_subprotocol_from_an_allowed_origin(live, world):
    async def scenario():
        async with open_socket(live, origin=live.url, subprotocols=["ep.v1", f"ep.key.{world.blue_key}"]) as ws:
            await ws.send(chat_frame(1, "architect", "hello"))
            return ws.subprotocol, await frames_until_terminal(ws, {1})

    subprotocol, frames = asyncio.run(scenario())
    assert subprotocol == "ep.v1"  # never the key back
    assert frames[-1]["type"] == "done"
    assert Usage.objects.get().team == world.blue


def test_a_logged_in_staff_user_may_use_the_socket_and_is_billed_to_the_dashboard_team(live, world):
    from django.contrib.auth.models import User
    from django.test import Client

    staff = User.objects.create_user("olga", password="x-long-password-1", is_staff=True)
    browser = Client()
    browser.force_login(staff)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"

    async def scenario():
        async with open_socket(live, origin=live.url, additional_headers={"Cookie": cookie}) as ws:
            await ws.send(chat_frame("s", "architect", "hello"))
            return await frames_until_terminal(ws, {"s"})

    assert asyncio.run(scenario())[-1]["type"] == "done"
    assert Usage.objects.get().team.name == "dashboard"
    User.objects.filter(pk=staff.pk).update(is_staff=False)
    assert handshake_status(live, origin=live.url, additional_headers={"Cookie": cookie}) == 403
