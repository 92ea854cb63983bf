"""ws /ws/v1/events: who may watch, and usage events across gateway processes.

With REDIS_URL set, two daphne processes share the channel layer: a request
served by one reaches a watcher connected to the other. Without Redis each
process has its own in-memory layer, so the same test checks delivery within
one process instead (and that it does NOT cross processes, which is the
documented single-process limit).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from django.conf import settings

from tests.conftest import start_daphne, stop_process
from tests.streaming_support import bearer, open_socket


@pytest.fixture(scope="module")
def second_gateway(test_database_url):
    server = start_daphne(test_database_url, name="gateway-b")
    yield server
    stop_process(server.process)


async def usage_event_for(watcher, request_id: str, timeout: float = 5) -> tuple[dict, str] | None:
    """The usage event of one request (the feed also carries other tests' events)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await watcher.recv()
                event = json.loads(raw)
                if event["kind"] == "usage" and event["data"]["request_id"] == request_id:
                    return event, raw
    except TimeoutError:
        return None


def chat_via_http(server, key: str, prompt: str) -> str:
    response = httpx.post(server.url + "/api/v1/chat", headers=bearer(key),
                          json={"persona": "architect", "messages": [{"role": "user", "content": prompt}]})
    assert response.status_code == 200
    return response.headers["x-request-id"]


def watch_and_chat(watch_on, chat_on, world, prompt: str) -> tuple[dict, str] | None:
    async def scenario():
        async with open_socket(watch_on, "/ws/v1/events", key=world.admin_key) as watcher:
            request_id = await asyncio.to_thread(chat_via_http, chat_on, world.red_key, prompt)
            return await usage_event_for(watcher, request_id, timeout=5 if chat_on is watch_on else 3)

    return asyncio.run(scenario())


def test_a_usage_event_reaches_a_watcher_without_keys_or_prompts(live, world):
    prompt = "A secret plan nobody may see"
    found = watch_and_chat(live, live, world, prompt)
    assert found is not None
    event, raw = found
    data = event["data"]
    assert (data["persona"], data["provider"], data["model"], data["status"]) == ("architect", "demo", "demo", "ok")
    assert float(data["cost_usd"]) > 0 and isinstance(data["cost_usd"], str)
    assert data["output_tokens"] > 0 and data["latency_ms"] >= 0
    assert prompt not in raw and world.red_key not in raw and "[demo]" not in raw


def test_with_redis_an_event_from_one_process_reaches_a_watcher_on_another(live, second_gateway, world):
    found = watch_and_chat(second_gateway, live, world, "across processes")
    if settings.REDIS_URL:
        assert found is not None, "the usage event did not cross from gateway A to a watcher on gateway B"
        assert found[0]["data"]["persona"] == "architect"
    else:
        # No shared layer: each process's in-memory layer is its own, so B
        # hears nothing from A, while B's own requests still reach it.
        assert found is None
        assert watch_and_chat(second_gateway, second_gateway, world, "same process") is not None


def test_the_feed_needs_an_admin_key_or_staff(live, world):
    async def attempt(key: str | None) -> int:
        from websockets.exceptions import InvalidStatus

        try:
            async with open_socket(live, "/ws/v1/events", key=key):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    statuses = {name: asyncio.run(attempt(key)) for name, key in
                {"chat key": world.red_key, "no key": None, "wrong key": "ep-nope", "admin": world.admin_key}.items()}
    assert statuses == {"chat key": 403, "no key": 403, "wrong key": 403, "admin": 101}


def test_a_burst_of_requests_arrives_as_one_frame_per_event(live, world):
    """Events leave a process in batches (gateway/events.py); a watcher still
    gets each request's usage event once, as a frame of its own."""
    from concurrent.futures import ThreadPoolExecutor

    async def scenario():
        async with open_socket(live, "/ws/v1/events", key=world.admin_key) as watcher:
            with ThreadPoolExecutor(8) as pool:
                ids = await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(
                    pool, chat_via_http, live, world.red_key, f"burst {i}") for i in range(8)))
            seen: list[str] = []
            try:
                async with asyncio.timeout(5):
                    while len(set(seen) & set(ids)) < len(ids):
                        event = json.loads(await watcher.recv())  # one event per frame, never a batch
                        assert set(event) == {"kind", "data"}
                        if event["kind"] == "usage":
                            seen.append(event["data"]["request_id"])
            except TimeoutError:
                pass
            return ids, seen

    ids, seen = asyncio.run(scenario())
    assert sorted(r for r in seen if r in ids) == sorted(ids)  # each one, exactly once
