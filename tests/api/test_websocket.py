"""ws /ws/v1/chat against a live daphne server, driven by the `websockets` client."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
from websockets.exceptions import InvalidStatus

from budgets.models import Usage
from tests.fakes.common import FakeReply
from tests.streaming_support import chat_frame, frames_until_terminal, open_socket, wait_for


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


def test_the_handshake_is_refused_before_accept(live, world):
    refusals = {
        "wrong key": handshake_status(live, key="ep-not-a-real-key"),
        "no key": handshake_status(live),
        "key in the query string": asyncio.run(_query_key_status(live, world.red_key)),
        "foreign origin": handshake_status(live, key=world.red_key, origin="https://evil.example"),
        "wrong key as subprotocol": handshake_status(live, subprotocols=["ep.v1", "ep.key.ep-nope"]),
    }
    assert refusals == dict.fromkeys(refusals, 403)
    assert handshake_status(live, key=world.red_key) == 101  # the same key, properly sent, is fine
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


# -- bad frames: an error event with a precise code, and the socket stays usable ---------------

BAD_FRAMES = {
    "not json": ("{'type': 'chat'", None, "invalid_json"),
    "a json array": ("[1, 2]", None, "invalid_json"),
    "binary": (b"\x00\x01", None, "invalid_json"),
    "unknown type": ('{"type": "complete", "id": "x"}', "x", "unknown_type"),
    "no id": ('{"type": "chat", "persona": "architect", "messages": [{"role": "user", "content": "hi"}]}', None,
              "invalid_id"),
    "missing messages": ('{"type": "chat", "id": "m", "persona": "architect"}', "m", "invalid_request"),
    "bad role": ('{"type": "chat", "id": "r", "persona": "architect", "messages": [{"role": "wizard"}]}', "r",
                 "invalid_request"),
    "unknown persona": (chat_frame("p", "astronaut", "hi"), "p", "model_not_found"),
}


def test_bad_frames_get_error_events_and_refused_rows_and_the_socket_carries_on(live, world):
    async def scenario():
        async with open_socket(live, key=world.red_key) as ws:
            errors = {}
            for case, (frame, _, _) in BAD_FRAMES.items():
                await ws.send(frame)
                errors[case] = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(chat_frame("after", "architect", "still there?"))
            return errors, await frames_until_terminal(ws, {"after"})

    errors, after = asyncio.run(scenario())
    for case, (_, request_id, code) in BAD_FRAMES.items():
        error = errors[case]
        assert (case, error["type"], error["id"], error["error"]["code"]) == (case, "error", request_id, code)
        assert error["error"]["message"] and error["error"]["request_id"].startswith("req_")
        refused = Usage.objects.get(request_id=error["error"]["request_id"])
        assert (refused.status, refused.endpoint, refused.error_code) == ("refused", "ws.chat", code)
    assert after[-1]["type"] == "done"
    assert Usage.objects.filter(status="ok").count() == 1


def test_a_duplicate_id_in_flight_and_an_unknown_cancel_are_refused(live, world):
    slow_demo(world, chunk_delay_ms=30)

    async def scenario():
        async with open_socket(live, key=world.red_key) as ws:
            await ws.send(chat_frame("d", "architect", "long answer"))
            await ws.send(chat_frame("d", "architect", "again"))
            await ws.send(json.dumps({"type": "cancel", "id": "nobody"}))
            return await frames_until_terminal(ws, {"d", "nobody"})

    frames = asyncio.run(scenario())
    errors = {f["id"]: f["error"]["code"] for f in frames if f["type"] == "error"}
    assert errors == {"d": "duplicate_id", "nobody": "unknown_id"}
    assert text_of(by_id(frames, "d")).startswith("[demo]") and by_id(frames, "d")[-1]["type"] == "done"
    # the duplicate is a refused request; a cancel frame is not a request
    assert sorted(Usage.objects.values_list("status", flat=True)) == ["ok", "refused"]


# -- cancel and disconnect stop the provider and settle the row ---------------------------------------


def long_reply() -> FakeReply:
    return FakeReply(text="word " * 400, chunk_size=5, chunk_delay=0.05, input_tokens=50, output_tokens=400)


def test_cancel_stops_the_provider_stream_within_a_second_and_settles_the_row(live, world, via_fake):
    via_fake.script(long_reply())

    async def scenario():
        async with open_socket(live, key=world.red_key) as ws:
            await ws.send(chat_frame("c", "via-openai", "Tell me everything"))
            seen = [json.loads(await ws.recv()) for _ in range(3)]
            await ws.send(json.dumps({"type": "cancel", "id": "c"}))
            cancelled_at = time.monotonic()
            closed = await asyncio.to_thread(wait_for, lambda: via_fake.streams and via_fake.streams[0]["closed"], 3)
            stopped_after = time.monotonic() - cancelled_at
            rest = await frames_until_terminal(ws, {"c"})
            return seen, rest, closed, stopped_after

    seen, rest, closed, stopped_after = asyncio.run(scenario())
    assert [f["type"] for f in seen] == ["delta"] * 3
    assert closed and stopped_after < 1.0
    assert not via_fake.streams[0]["completed"]
    assert via_fake.streams[0]["sent"] < via_fake.streams[0]["total"]
    final = rest[-1]
    assert (final["type"], final["error"]["code"]) == ("error", "cancelled")
    row = Usage.objects.get()  # written before the final event was sent
    assert (row.status, row.http_status, row.error_code, row.endpoint) == ("cancelled", 499, "client_cancelled", "ws.chat")
    assert row.output_tokens > 0 and row.input_tokens > 0 and row.cost_usd > 0
    assert row.request_id == final["error"]["request_id"]


def test_closing_the_socket_stops_the_provider_and_settles_the_row(live, world, via_fake):
    via_fake.script(long_reply())

    async def scenario():
        async with open_socket(live, key=world.red_key) as ws:
            await ws.send(chat_frame("c", "via-openai", "Tell me everything"))
            for _ in range(3):
                await ws.recv()
        return time.monotonic()

    closed_at = asyncio.run(scenario())
    assert wait_for(lambda: via_fake.streams and via_fake.streams[0]["closed"], 3)
    assert time.monotonic() - closed_at < 1.5
    assert not via_fake.streams[0]["completed"]
    row = wait_for(lambda: Usage.objects.first(), 3)
    assert (row.status, row.error_code) == ("cancelled", "client_disconnected")
    assert row.output_tokens > 0 and row.cost_usd > 0


# -- back-pressure ---------------------------------------------------------------------------------


def small_buffer_socket(live) -> socket.socket:
    """A client socket with a small receive buffer, so the kernel holds little for it."""
    host, port = live.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect((host, int(port)))
    return sock


def test_a_client_that_stops_reading_pauses_the_provider_instead_of_filling_memory(live, world, via_fake):
    size = 24 * 1024 * 1024
    via_fake.script(FakeReply(text="x" * size, chunk_size=64 * 1024, output_tokens=size // 4))

    async def scenario():
        async with open_socket(live, key=world.red_key, sock=small_buffer_socket(live), max_queue=1,
                               max_size=None) as ws:
            await ws.send(chat_frame("big", "via-openai", "Everything, please"))
            first = json.loads(await ws.recv())
            await asyncio.sleep(1.5)  # not reading: everything backs up to the provider
            stalled = dict(via_fake.streams[0])
            await asyncio.sleep(0.5)
            still = dict(via_fake.streams[0])
            rest = await frames_until_terminal(ws, {"big"}, timeout=30)
            return first, stalled, still, rest

    first, stalled, still, rest = asyncio.run(scenario())
    print("back-pressure plateau:", stalled, "of", still["total"])
    assert not stalled["completed"] and stalled["sent"] == still["sent"] < stalled["total"] // 2
    frames = [first, *rest]
    assert len(text_of(frames)) == size and frames[-1]["type"] == "done"  # paused, then delivered whole
    assert via_fake.streams[0]["completed"]
