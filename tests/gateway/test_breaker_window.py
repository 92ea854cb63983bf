"""The circuit breaker judges a provider over a window of calls (gateway/breakers.py):
a burst of transient errors that retries recover from does not open it, a
provider that fails every call does. Through the live server and the OpenAI fake."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from budgets.models import Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.common import Fault
from tests.fakes.openai_server import FakeOpenAIServer, error_body

MODEL = "gpt-4o-mini"
# The documented defaults, set on the provider: the live server's own default
# volume is 1000 so that other tests' failures never open a breaker.
DEFAULT_RULE = {"breaker_min_calls": 20, "breaker_failure_ratio": 0.5, "breaker_window_seconds": 30}


class FailsOncePerPrompt(FakeOpenAIServer):
    """Answers 503 to the first call carrying a prompt, then as usual: every
    request meets exactly one transient error, however calls interleave."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.seen_lock = threading.Lock()

    async def _chat(self, request: Request) -> Response:
        prompt = json.loads(await request.body())["messages"][-1]["content"]
        with self.seen_lock:
            first = prompt not in self.seen
            self.seen.add(prompt)
        if first:
            self.record(request.url.path, dict(request.headers), None)
            return JSONResponse(error_body(503, "overloaded, try again"), 503)
        return await super()._chat(request)


@pytest.fixture(scope="module")
def flaky():
    server = FailsOncePerPrompt().start()
    yield server
    server.stop()


def _provider(fake: FakeOpenAIServer, **options) -> Provider:
    # A fresh name per test: without Redis the live server keeps each breaker's window.
    provider = Provider(name=f"p-{uuid.uuid4().hex[:8]}", kind="openai", base_url=fake.base_url + "/v1",
                        read_timeout=5, options=options)
    provider.set_credential("sk-test-breaker")
    provider.save()
    Model.objects.create(provider=provider, name=MODEL, input_price=1, output_price=2)
    return provider


def _persona(slug: str, *providers: Provider) -> None:
    persona = Persona.objects.create(slug=slug)
    for position, provider in enumerate(providers):
        RouteStep.objects.create(persona=persona, position=position, provider=provider, model=MODEL)


def _ask(live, world, persona: str, prompt: str) -> httpx.Response:
    return httpx.post(live.url + "/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {world.red_key}"},
                      json={"model": persona, "messages": [{"role": "user", "content": prompt}]})


def _breaker(live, provider: Provider) -> dict:
    return httpx.get(live.url + "/health").json()["providers"][provider.name]["breakers"][MODEL]


def test_50_concurrent_calls_that_each_meet_one_503_all_succeed(live, world, flaky):
    flaky.reset()
    flaky.seen.clear()
    provider = _provider(flaky, **DEFAULT_RULE)
    _persona("bursty", provider)  # no fallback: a call the breaker refused would fail
    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda i: _ask(live, world, "bursty", f"question {i}"), range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    assert flaky.call_count == 100  # each: one 503, one answer
    rows = Usage.objects.filter(persona="bursty")
    assert rows.count() == 50 and {(r.status, r.attempts) for r in rows} == {("ok", 2)}
    state = _breaker(live, provider)
    assert state["state"] == "closed" and state["failures"] == 0


def test_a_provider_that_fails_every_call_opens_its_breaker_and_the_route_falls_through(live, world, fakes_pair):
    down_fake, backup_fake = fakes_pair
    down_fake.default_reply = Fault("status", status=503, message="down")
    down = _provider(down_fake, **DEFAULT_RULE)
    backup = _provider(backup_fake)
    _persona("failover", down, backup)
    with ThreadPoolExecutor(10) as pool:
        first = list(pool.map(lambda i: _ask(live, world, "failover", f"q{i}"), range(20)))
    assert [r.status_code for r in first] == [200] * 20
    assert {r.headers["x-ep-provider"] for r in first} == {backup.name}
    assert _breaker(live, down)["state"] == "open"  # 20 calls ended in the window, all failed
    calls_so_far = down_fake.call_count
    later = [_ask(live, world, "failover", f"later {i}") for i in range(5)]
    assert [r.headers["x-ep-provider"] for r in later] == [backup.name] * 5
    assert down_fake.call_count == calls_so_far  # open: the provider is spared
    row = Usage.objects.get(request_id=later[-1].headers["x-request-id"])
    assert [(a["provider"], a["outcome"]) for a in row.attempt_log] == [(down.name, "circuit_open"),
                                                                         (backup.name, "ok")]


@pytest.fixture(scope="module")
def _fakes_pair():
    servers = FakeOpenAIServer().start(), FakeOpenAIServer().start()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def fakes_pair(_fakes_pair):
    for server in _fakes_pair:
        server.reset()
    return _fakes_pair
