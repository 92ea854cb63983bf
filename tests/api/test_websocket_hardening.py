"""The chat socket against hostile handshakes and frames: unknown paths and
foreign origins are refused at the handshake (never a 500), and a frame
nested too deep is one refused request, not a dead socket."""

from __future__ import annotations

import asyncio
import json

import pytest

from budgets.models import Usage
from tests.api.test_websocket import handshake_status
from tests.streaming_support import chat_frame, frames_until_terminal, open_socket


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_frame_nested_too_deep_is_one_refused_request_and_the_socket_carries_on(live, world):
    deep = '{"type": "chat", "id": "deep", "persona": "architect", "tool_choice": ' + nested(100_000) + "}"

    async def scenario():
        async with open_socket(live, key=world.red_key) as ws:
            await ws.send(deep)
            refusal = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(chat_frame("after", "architect", "still there?"))
            return refusal, await frames_until_terminal(ws, {"after"})

    refusal, after = asyncio.run(scenario())
    assert refusal["type"] == "error" and refusal["error"]["code"] == "frame_too_deep"
    assert after[-1]["type"] == "done"
    row = Usage.objects.get(request_id=refusal["error"]["request_id"])
    assert (row.status, row.error_code, row.endpoint) == ("refused", "frame_too_deep", "ws.chat")
    assert Usage.objects.count() == 2
    assert "RecursionError" not in live.log_text()


@pytest.mark.parametrize("path", ["/ws/v1/nope", "/ws/", "/ws/v1/chat/extra", "/dashboard/"])
def test_an_unknown_path_is_refused_at_the_handshake_not_a_500(live, world, path):
    assert handshake_status(live, key=world.red_key, path=path) == 403
    assert "No route found" not in live.log_text()
    assert Usage.objects.count() == 0


def test_the_origin_must_be_this_sites_own_scheme_host_and_port(live, world):
    port = int(live.url.rsplit(":", 1)[1])
    other = port + 1 if port < 65535 else port - 1
    statuses = {
        origin: handshake_status(live, key=world.red_key, origin=origin)
        for origin in (live.url, f"http://127.0.0.1:{other}", f"https://127.0.0.1:{port}",
                       f"http://localhost:{port}", "http://127.0.0.1", "null", "https://evil.example")
    }
    assert statuses == {live.url: 101, **{o: 403 for o in statuses if o != live.url}}
    assert handshake_status(live, key=world.red_key) == 101  # no Origin: a program, not a page


@pytest.mark.slow
def test_in_debug_with_any_host_allowed_only_the_pages_own_origin_may_open_a_socket(dev_server, transactional_db,
                                                                                     world):
    # make run's server: DEBUG on and ALLOWED_HOSTS unset, i.e. "*"; it used to accept any Origin.
    port = int(dev_server.url.rsplit(":", 1)[1])
    statuses = {origin: handshake_status(dev_server, key=world.red_key, origin=origin)
                for origin in (dev_server.url, "https://evil.example", f"http://127.0.0.1:{port + 1}")}
    assert statuses == {dev_server.url: 101, "https://evil.example": 403, f"http://127.0.0.1:{port + 1}": 403}
