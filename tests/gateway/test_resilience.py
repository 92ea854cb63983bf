"""Routing and resilience through the HTTP API, with the fake providers' faults:
fallback, retries honouring Retry-After, circuit breakers, stream cuts and
stalls, idempotency, weighted steps, /health."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from budgets.models import Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.common import FakeReply, Fault
from tests.fakes.openai_server import FakeOpenAIServer

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def fakes():
    primary, backup = FakeOpenAIServer().start(), FakeOpenAIServer().start()
    yield primary, backup
    primary.stop()
    backup.stop()


def _provider(name: str, fake: FakeOpenAIServer, **options) -> Provider:
    provider = Provider(name=name, kind="openai", base_url=fake.base_url + "/v1", read_timeout=5, options=options)
    provider.set_credential("sk-test-resilience")
    provider.save()
    Model.objects.create(provider=provider, name=MODEL, input_price=1, output_price=2)
    return provider


def _persona(slug: str, *steps: tuple[Provider, dict]) -> Persona:
    persona = Persona.objects.create(slug=slug)
    for position, (provider, params) in enumerate(steps):
        RouteStep.objects.create(persona=persona, position=position, provider=provider, model=MODEL, params=params)
    return persona


def _chain(fakes, primary: str = "primary", **primary_options) -> None:
    for fake in fakes:
        fake.reset()
    first = _provider(primary, fakes[0], **primary_options)
    _persona("chain", (first, {"max_attempts": 1}), (_provider("backup", fakes[1]), {}))


@pytest.fixture
def chain(fakes, world):
    """Persona `chain`: primary (one attempt) then backup."""
    _chain(fakes)
    return fakes


@pytest.fixture
def breaker_chain(fakes, world):
    """`chain` whose primary's breaker opens once 3 calls ended in its window,
    most of them failed. The primary has a fresh name: without Redis the live
    server keeps each breaker's window across tests (keyed by provider name)."""
    name = f"primary-{uuid.uuid4().hex[:8]}"
    _chain(fakes, name, breaker_min_calls=3, breaker_cooldown_seconds=2)
    return name, *fakes


def ask(live, world, model="chain", **extra):
    headers = {"Authorization": f"Bearer {world.red_key}", **extra.pop("headers", {})}
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    return httpx.post(live.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_a_503_falls_back_to_the_next_step_with_one_billed_row(live, world, chain):
    primary, backup = chain
    primary.script(Fault("status", status=503, message="overloaded"))
    backup.script(FakeReply(text="from the backup"))
    response = ask(live, world)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "from the backup"
    assert response.headers["x-ep-provider"] == "backup"
    row = Usage.objects.get()
    assert (row.provider, row.status, row.attempts) == ("backup", "ok", 2)
    assert [(a["provider"], a["outcome"]) for a in row.attempt_log] == [("primary", "unavailable"), ("backup", "ok")]
    assert row.cost_usd > 0 and primary.call_count == 1 and backup.call_count == 1


def test_a_bad_request_is_not_hidden_behind_another_provider(live, world, chain):
    primary, backup = chain
    primary.script(Fault("status", status=400, message="bad field"))
    response = ask(live, world)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "provider_bad_request"
    assert backup.call_count == 0


def test_a_429_with_retry_after_2_is_retried_no_sooner_than_2_seconds(live, world, fakes):
    primary_fake, _ = fakes
    primary_fake.reset()
    provider = _provider("limited", primary_fake)
    _persona("limited", (provider, {"max_attempts": 2}))
    primary_fake.script(Fault("status", status=429, retry_after=2, message="slow down"), FakeReply(text="finally"))
    response = ask(live, world, model="limited")
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "finally"
    first, second = primary_fake.requests
    assert second["at"] - first["at"] >= 2.0
    assert Usage.objects.get().attempts == 2


def test_a_retry_after_above_the_cap_fails_over_or_returns_429_with_the_header(live, world, fakes):
    primary_fake, _ = fakes
    primary_fake.reset()
    provider = _provider("capped", primary_fake, retry_after_cap=1)
    _persona("capped", (provider, {"max_attempts": 3}))
    primary_fake.script(Fault("status", status=429, retry_after=30, message="come back later"))
    started = time.monotonic()
    response = ask(live, world, model="capped")
    assert time.monotonic() - started < 5  # did not wait 30 s
    assert response.status_code == 429 and response.headers["retry-after"] == "30"
    assert primary_fake.call_count == 1


def test_the_breaker_opens_after_the_threshold_and_spares_the_primary_during_cooldown(live, world, breaker_chain):
    name, primary, backup = breaker_chain
    primary.default_reply = Fault("status", status=500, message="down")  # every call fails
    for _ in range(3):
        assert ask(live, world).status_code == 200  # served by the backup
    assert primary.call_count == 3  # threshold reached: open
    for _ in range(4):
        assert ask(live, world).status_code == 200
    assert primary.call_count == 3  # no call while open
    assert Usage.objects.filter(provider="backup").count() == 7
    health = httpx.get(live.url + "/health").json()
    assert health["providers"][name]["breakers"][MODEL]["state"] in ("open", "half_open")
    scraped = httpx.get(live.url + "/metrics", headers={"Authorization": f"Bearer {world.admin_key}"}).text
    assert f'ep_breaker_state{{model="{MODEL}",provider="{name}"}} 2.0' in scraped
    # Every request succeeded (the backup answered), but the primary's 3 calls all
    # failed: provider health counts attempts, not the requests' outcomes.
    assert (health["providers"][name]["failed_attempts_5m"],
            health["providers"][name]["error_rate_5m"]) == (3, 1.0)
    time.sleep(2.1)  # cooldown over: one probe goes through, succeeds, closes the breaker
    primary.default_reply = FakeReply(text="primary is back")
    response = ask(live, world)
    assert response.json()["choices"][0]["message"]["content"] == "primary is back"
    assert primary.call_count == 4
    assert httpx.get(live.url + "/health").json()["providers"][name]["breakers"][MODEL]["state"] == "closed"


def _stream(live, world, model="chain"):
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    with httpx.stream("POST", live.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {world.red_key}"}) as response:
        return response.status_code, [line for line in response.iter_lines() if line]


def test_a_stream_cut_after_content_ends_in_an_error_event_without_done(live, world, chain):
    primary, backup = chain
    primary.script(Fault("cut", after_chunks=3, reply=FakeReply(text="a long answer that will be cut", chunk_size=3)))
    status, lines = _stream(live, world)
    assert status == 200
    assert "data: [DONE]" not in lines
    assert "error" in json.loads(lines[-1][6:])
    assert backup.call_count == 0  # content had reached the client: no fallback
    row = _wait_row()
    assert (row.status, row.provider) == ("error", "primary")
    assert row.output_tokens > 0 and row.error_code.startswith("provider_")


def test_a_stream_that_fails_before_content_falls_back(live, world, chain):
    primary, backup = chain
    primary.script(Fault("status", status=503))
    backup.script(FakeReply(text="streamed by the backup"))
    status, lines = _stream(live, world)
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in lines if line.startswith("data: {") and json.loads(line[6:])["choices"])
    assert status == 200 and text == "streamed by the backup" and lines[-1] == "data: [DONE]"


def test_a_stalled_stream_ends_within_the_idle_timeout(live, world, fakes):
    primary_fake, _ = fakes
    primary_fake.reset()
    provider = _provider("stalling", primary_fake, idle_timeout=1)
    _persona("stalling", (provider, {}))
    primary_fake.script(Fault("stall_stream", after_chunks=2, seconds=20,
                              reply=FakeReply(text="starts then goes silent", chunk_size=4)))
    started = time.monotonic()
    status, lines = _stream(live, world, model="stalling")
    assert time.monotonic() - started < 4
    error = json.loads(lines[-1][6:])["error"]
    assert "within 1.0 s" in error["message"] and error["code"] == "provider_timeout"
    assert _wait_row().status == "error"


def test_two_concurrent_requests_with_one_idempotency_key_make_one_provider_call(live, world, chain):
    primary, _ = chain
    primary.default_reply = FakeReply(text="exactly once", chunk_delay=0)
    primary.script(FakeReply(text="exactly once"))
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}  # Redis outlives test databases
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: ask(live, world, headers=headers), range(2))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert primary.call_count == 1
    assert sorted(r.headers.get("idempotent-replayed", "no") for r in (first, second)) == ["no", "true"]
    rows = Usage.objects.order_by("created_at")
    assert rows.count() == 2 and sorted(r.cost_usd > 0 for r in rows) == [False, True]
    other_body = ask(live, world, headers=headers, temperature=0.5)
    assert other_body.status_code == 422 and other_body.json()["error"]["code"] == "idempotency_key_reused"


def test_weighted_steps_of_equal_rank_share_the_traffic(live, world, fakes):
    a_fake, b_fake = fakes
    for fake in fakes:
        fake.reset()
    a, b = _provider("left", a_fake), _provider("right", b_fake)
    persona = Persona.objects.create(slug="balanced")
    RouteStep.objects.create(persona=persona, position=0, provider=a, model=MODEL, weight=3)
    RouteStep.objects.create(persona=persona, position=0, provider=b, model=MODEL, weight=1)
    served = [ask(live, world, model="balanced").headers["x-ep-provider"] for _ in range(40)]
    assert 20 <= served.count("left") <= 38 and served.count("right") >= 2


def test_a_deep_health_check_probes_providers_and_needs_an_admin_key(live, world, chain):
    primary, _ = chain
    assert httpx.get(live.url + "/health", params={"deep": 1}).status_code == 401
    refused = httpx.get(live.url + "/health", params={"deep": 1}, headers={"Authorization": f"Bearer {world.red_key}"})
    assert refused.status_code == 403
    primary.default_reply = Fault("status", status=500)
    body = httpx.get(live.url + "/health", params={"deep": 1},
                     headers={"Authorization": f"Bearer {world.admin_key}"}).json()
    assert body["probes"]["backup"]["ok"] is True
    assert body["probes"]["primary"] == {**body["probes"]["primary"], "ok": False, "error": "unavailable"}
    assert body["probes"]["demo"]["ok"] is True


def _wait_row(timeout: float = 5.0) -> Usage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = Usage.objects.first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError("no usage row")


def test_the_providers_page_shows_an_open_breaker(db, world, client):
    import asyncio

    from django.contrib.auth import get_user_model

    from budgets import shared_state as shared
    from gateway.resilience import Breaker
    from personas.snapshot import StepInfo
    from providers.snapshot import provider_info as _provider_info

    client.force_login(get_user_model().objects.create_superuser("root", "root@localhost", "a-long-password-1"))
    step = StepInfo(0, _provider_info(world.demo, []), "demo", {"breaker_min_calls": 1}, 1, False)
    breaker = Breaker(step)
    try:
        assert "closed" in client.get("/dashboard/providers/").content.decode()
        assert asyncio.run(breaker.failed()) == "open"
        page = client.get("/dashboard/providers/").content.decode()
        assert "open: demo (open)" in page
    finally:
        Breaker._local.clear()
        if shared.redis_enabled():
            shared.sync_redis().delete(breaker.key)


def test_breaker_state_is_shared_across_processes_with_redis(live, world, breaker_chain, test_database_url):
    from django.conf import settings

    from tests.conftest import start_daphne, stop_process

    name, primary, _ = breaker_chain
    provider = Provider.objects.get(name=name)
    provider.options = {**provider.options, "breaker_cooldown_seconds": 120}  # outlasts starting a process
    provider.save()
    primary.default_reply = Fault("status", status=500, message="down")
    for _ in range(3):
        assert ask(live, world).status_code == 200  # the backup serves; the breaker opens on this process
    assert primary.call_count == 3
    other = start_daphne(test_database_url, name="gateway-breaker")
    try:
        for _ in range(2):
            response = httpx.post(other.url + "/v1/chat/completions", timeout=30,
                                  headers={"Authorization": f"Bearer {world.red_key}"},
                                  json={"model": "chain", "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == 200
    finally:
        stop_process(other.process)
    # With Redis the second process sees the open breaker and never calls the
    # primary; without Redis each process keeps its own breaker.
    assert primary.call_count == (3 if settings.REDIS_URL else 5)


def test_a_closed_breaker_is_trusted_for_the_shared_check_window_then_asked_again(live, world, fakes):
    """With Redis a process asks the shared breaker at most once per
    EP_BREAKER_SHARED_CHECK_SECONDS (1 s) while it is closed and clean: a
    breaker another process opens reaches this one within that window."""
    from django.conf import settings

    from budgets import shared_state as shared

    primary_fake, backup_fake = fakes
    for fake in fakes:
        fake.reset()
    # Fresh names: breakers are keyed by provider name, and without Redis the
    # live server keeps the ones earlier tests opened.
    name = f"trusted-{uuid.uuid4().hex[:8]}"
    primary = _provider(name, primary_fake, breaker_cooldown_seconds=60)
    _persona("trusting", (primary, {"max_attempts": 1}), (_provider(f"{name}-backup", backup_fake), {}))
    assert ask(live, world, model="trusting").headers["x-ep-provider"] == name  # "closed", now trusted
    if settings.REDIS_URL:  # another process opens the breaker
        shared.sync_redis().hset(f"ep:breaker:{name}/{MODEL}",
                                 mapping={"state": "open", "since": time.time(), "failures": 0})
    assert ask(live, world, model="trusting").headers["x-ep-provider"] == name  # within the window
    time.sleep(1.3)
    served_by = ask(live, world, model="trusting").headers["x-ep-provider"]
    # Past the window the process asks Redis and skips the open breaker; without
    # Redis each process keeps its own breaker, which nothing here opened.
    assert served_by == (f"{name}-backup" if settings.REDIS_URL else name)
    assert primary_fake.call_count == (2 if settings.REDIS_URL else 3)
