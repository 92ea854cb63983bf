"""Redis killed (SIGKILL) while requests are in flight, then started again: an
answer already on its way is never turned into a 500 by the work after it
(breakers, token counts, live events, config generation, idempotency records);
admission that needs Redis refuses with a 503 and a precise code meanwhile; once
Redis is back, requests are admitted again. Every request keeps its Usage row.
The Redis is the test's own (tests/fault_support.py); the gateway a live server
pointed at it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from budgets.models import RateLimit, Usage
from tests.conftest import start_daphne, stop_process
from tests.fakes.common import FakeReply, Fault
from tests.fault_support import OwnRedis, wait_until

pytestmark = pytest.mark.slow


def _ask(client: httpx.Client, url: str, key: str, **headers) -> dict:
    started = time.monotonic()
    response = client.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}", **headers},
                           json={"model": "via-openai", "messages": [{"role": "user", "content": "hi"}]})
    body = response.json()
    return {"status": response.status_code, "id": response.headers["x-request-id"], "started": started,
            "ended": time.monotonic(), "code": body["error"]["code"] if "error" in body else "",
            "answered": bool(body.get("choices"))}


def test_redis_killed_under_load_turns_no_answer_into_a_500(live, world, via_fake, test_database_url, tmp_path):
    # Each answer takes 0.2 s upstream, so requests are in flight when Redis dies.
    via_fake.default_reply = Fault("stall", seconds=0.2, reply=FakeReply(text="still here"))
    # Red has a rate limit (checked in Redis: fails closed); blue has none.
    RateLimit.objects.create(team=world.red, requests_per_minute=100_000)
    redis_server = OwnRedis().start()
    server = start_daphne(test_database_url, name="gateway-redis-outage", REDIS_URL=redis_server.url,
                          EP_SPOOL_DIR=str(tmp_path / "spool"))
    outcomes: list[dict] = []
    lock, stopping = threading.Lock(), threading.Event()

    def load(worker: int) -> None:
        key = world.red_key if worker % 2 else world.blue_key
        with httpx.Client(timeout=30) as client:
            while not stopping.is_set():
                outcome = {"team": "red" if worker % 2 else "blue", **_ask(client, server.url, key)}
                with lock:
                    outcomes.append(outcome)

    try:
        with ThreadPoolExecutor(6) as pool:
            workers = [pool.submit(load, i) for i in range(6)]
            try:
                time.sleep(2)
                killed_at = time.monotonic()
                redis_server.kill()
                time.sleep(0.5)
                with httpx.Client(timeout=30) as client:  # exactly once cannot be promised now: refused
                    idempotent = _ask(client, server.url, world.blue_key, **{"Idempotency-Key": "order-17"})
                time.sleep(1.5)
                restarted_at = time.monotonic()
                redis_server.start()
                # Back: the clients reconnect on their next command.
                wait_until(lambda: any(o["team"] == "red" and o["status"] == 200 and o["started"] > restarted_at
                                       for o in list(outcomes)), 15, "a rate-limited request admitted again")
            finally:
                stopping.set()
            for worker in workers:
                worker.result()
        health = httpx.get(server.url + "/health").json()
    finally:
        stop_process(server.process)
        redis_server.destroy()

    statuses = Counter((o["status"], o["code"]) for o in outcomes)
    assert 500 not in {o["status"] for o in outcomes}, statuses
    assert set(statuses) <= {(200, ""), (503, "rate_limit_store_unavailable")}, statuses
    assert all(o["answered"] for o in outcomes if o["status"] == 200)
    # Answers under way when Redis died were delivered, not turned into errors.
    assert any(o["status"] == 200 and o["started"] < killed_at < o["ended"] for o in outcomes), statuses
    down = [o for o in outcomes if killed_at + 0.3 < o["started"] and o["ended"] < restarted_at]
    assert {o["status"] for o in down if o["team"] == "red"} == {503}  # admission fails closed
    assert {o["status"] for o in down if o["team"] == "blue"} == {200}  # no Redis needed to admit it
    assert (idempotent["status"], idempotent["code"]) == (503, "idempotency_store_unavailable")
    assert health["cache"] == "ok"
    # One Usage row per request, refusals included.
    ids = [o["id"] for o in outcomes] + [idempotent["id"]]
    rows = wait_until(lambda: Usage.objects.filter(request_id__in=ids).count() == len(ids) or None, 10,
                      "a Usage row for every request")
    assert rows and Usage.objects.count() == len(ids)
