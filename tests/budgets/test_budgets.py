"""Budgets, cost and rate limits through the HTTP API, under concurrency.

The demo provider is given prices (input free, $1 per million output tokens);
it honours max_tokens, so a call with max_tokens=10 costs exactly its worst
case, $0.00001, and a settled request never frees room for another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from budgets.models import Alert, Budget, BudgetCounter, RateLimit, Reservation, Usage, WebhookDelivery
from providers.models import Model
from tests.conftest import ARTIFACTS, start_daphne, stop_process

WORST_CASE = Decimal("0.00001")  # max_tokens=10 at $1/M output, input free


@pytest.fixture
def priced_demo(world):
    Model.objects.filter(provider=world.demo, name="demo").update(input_price=0, output_price=1)
    world.demo.options = {"latency_ms": 200, "chunk_delay_ms": 0}
    world.demo.save()
    return world


def ask(url: str, key: str, **body) -> httpx.Response:
    payload = {"model": "architect", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(url + "/v1/chat/completions", json=payload, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def fire(urls: list[str], key: str, count: int, **body) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda i: ask(urls[i % len(urls)], key, **body), range(count)))


def assert_counters_match_the_ledger(budget: Budget) -> BudgetCounter:
    counter = BudgetCounter.objects.get(budget=budget)
    ledger = Usage.objects.filter(team=budget.team).aggregate(s=Sum("cost_usd"))["s"] or Decimal(0)
    ledger = Decimal(ledger).quantize(Decimal("0.00000001"))  # SQLite sums decimals as floats
    assert counter.spent == ledger
    assert counter.reserved == 0 and Reservation.objects.count() == 0
    return counter


def test_100_concurrent_requests_fit_a_budget_with_room_for_10(live, priced_demo):
    world = priced_demo
    budget = Budget.objects.create(name="red monthly", scope="team", team=world.red, period="month",
                                   limit_usd=WORST_CASE * Decimal("10.5"), hard=True)
    responses = fire([live.url], world.red_key, 100)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 90
    assert sum(Usage.objects.filter(status="ok").values_list("cost_usd", flat=True)) == WORST_CASE * 10
    refusal = next(r for r in responses if r.status_code == 429).json()["error"]
    assert refusal["code"] == "budget_exceeded" and "red monthly" in refusal["message"]
    assert Usage.objects.count() == 100
    assert Usage.objects.filter(status="ok", provider="demo").count() == 10  # only these reached the provider
    counter = assert_counters_match_the_ledger(budget)
    assert 0 < counter.spent <= budget.limit_usd


def test_the_budget_holds_across_two_gateway_processes(live, priced_demo, test_database_url):
    world = priced_demo
    budget = Budget.objects.create(name="red shared", scope="team", team=world.red, period="day",
                                   limit_usd=WORST_CASE * Decimal("10.5"), hard=True)
    second = start_daphne(test_database_url, name="gateway-second")
    try:
        responses = fire([live.url, second.url], world.red_key, 100)
    finally:
        stop_process(second.process)
    assert [r.status_code for r in responses].count(200) == 10
    assert Usage.objects.count() == 100
    assert assert_counters_match_the_ledger(budget).spent <= budget.limit_usd


def test_a_refused_request_says_which_budget_and_costs_nothing(live, priced_demo):
    world = priced_demo
    Budget.objects.create(name="red tiny", scope="key", api_key_id=_key_id(world.red_key),
                          period="day", limit_usd=WORST_CASE / 2, hard=True)
    response = ask(live.url, world.red_key)
    assert response.status_code == 429
    assert "Budget 'red tiny'" in response.json()["error"]["message"]
    row = Usage.objects.get()
    assert (row.status, row.error_code, row.cost_usd, row.provider) == ("refused", "budget_exceeded", 0, "")
    # another key of the same team is not under that key's budget
    assert ask(live.url, world.direct_key).status_code == 200


def test_a_soft_budget_never_refuses(live, priced_demo):
    world = priced_demo
    world.demo.options = {"latency_ms": 0}
    world.demo.save()
    Budget.objects.create(name="red soft", scope="global", period="lifetime", limit_usd=Decimal("0.0000001"),
                          hard=False)
    assert [ask(live.url, world.red_key).status_code for _ in range(3)] == [200, 200, 200]


def test_a_stream_cancelled_after_k_chunks_is_billed_for_them(live, priced_demo):
    world = priced_demo
    world.demo.options = {"latency_ms": 0, "chunk_delay_ms": 150}
    world.demo.save()
    budget = Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal(1), hard=True)
    body = {"model": "architect", "stream": True, "messages": [{"role": "user", "content": "long answer please"}]}
    with httpx.stream("POST", live.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {world.red_key}"}) as response:
        lines = response.iter_lines()
        deltas = 0
        for line in lines:
            if '"content":"' in line and '"content":""' not in line:
                deltas += 1
            if deltas == 3:
                break
    row = _wait_for(lambda: Usage.objects.filter(status="cancelled").first())
    assert row.output_tokens > 0 and row.cost_usd > 0
    assert row.http_status == 499 and row.stream
    assert_counters_match_the_ledger(budget)


class _FlakyWebhook(BaseHTTPRequestHandler):
    """Down (503) for its first request, then up: records what it accepted."""

    received: list[tuple[bytes, str]] = []
    calls = 0

    def do_POST(self):  # noqa: N802 - http.server's name
        type(self).calls += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).calls == 1:
            self.send_response(503)
        else:
            type(self).received.append((body, self.headers["X-EP-Signature"]))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_webhook():
    _FlakyWebhook.received, _FlakyWebhook.calls = [], 0
    server = HTTPServer(("127.0.0.1", 0), _FlakyWebhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_50_requests_crossing_80_percent_raise_exactly_one_alert_delivered_later(live, priced_demo, flaky_webhook):
    world = priced_demo
    world.demo.options = {"latency_ms": 50}
    world.demo.save()
    calibration = ask(live.url, world.red_key)
    cost = Decimal(calibration.headers["x-ep-cost-usd"])
    budget = Budget.objects.create(
        name="red alerts", scope="team", team=world.red, period="month", limit_usd=cost * 60, hard=False,
        thresholds=[80], webhook_url=flaky_webhook, notify_emails="lead@example.com")
    responses = fire([live.url], world.red_key, 50)
    assert all(r.status_code == 200 for r in responses)
    assert Alert.objects.filter(budget=budget, threshold=80).count() == 1
    alert = Alert.objects.get(budget=budget)
    assert "Budget 'red alerts' is 8" in alert.message  # 80-85% used when it crossed
    delivered = _wait_for(lambda: _FlakyWebhook.received or None, timeout=15)
    body, signature = delivered[0]
    expected = "sha256=" + hmac.new(settings.SECRET_KEY.encode(), body, hashlib.sha256).hexdigest()
    assert signature == expected
    assert json.loads(body)["threshold"] == 80 and _FlakyWebhook.calls == 2
    # The hook has the body a moment before the sweeper records the delivery.
    delivery = _wait_for(lambda: WebhookDelivery.objects.filter(delivered_at__isnull=False).first(), timeout=15)
    assert WebhookDelivery.objects.count() == 1 and delivery.attempts == 2
    mails = [p.read_text() for p in (ARTIFACTS / "mail").glob("*.log")] if (ARTIFACTS / "mail").exists() else []
    assert any("red alerts" in m and "lead@example.com" in m for m in mails)
    assert assert_counters_match_the_ledger(budget).spent == cost * 51


def test_rpm_admits_exactly_n_per_window_across_two_processes(live, world, test_database_url):
    world.demo.options = {"latency_ms": 0}
    world.demo.save()
    RateLimit.objects.create(api_key_id=_key_id(world.red_key), requests_per_minute=5)
    _wait_until_early_in_a_minute()
    second = start_daphne(test_database_url, name="gateway-rpm")
    try:
        responses = fire([live.url, second.url], world.red_key, 12)
    finally:
        stop_process(second.process)
    statuses = [r.status_code for r in responses]
    if settings.REDIS_URL:
        assert statuses.count(200) == 5  # one shared window
    else:
        assert statuses.count(200) == 10  # without Redis each process keeps its own window
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "5"
    assert Usage.objects.count() == 12


def test_an_unreachable_budget_store_refuses_with_503(live, priced_demo):
    world = priced_demo
    world.demo.options = {"latency_ms": 0}
    world.demo.save()
    Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal(1), hard=True)
    assert ask(live.url, world.red_key).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE budgets_budgetcounter RENAME TO budgets_budgetcounter_away")
    try:
        response = ask(live.url, world.red_key)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE budgets_budgetcounter_away RENAME TO budgets_budgetcounter")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "budget_store_unavailable"
    assert Usage.objects.filter(status="ok").count() == 1  # the refused one never reached the provider


def _key_id(raw: str) -> int:
    from accounts.models import ApiKey, hash_key

    return ApiKey.objects.get(key_hash=hash_key(raw)).id


def _wait_for(probe, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _wait_until_early_in_a_minute() -> None:
    # A fixed window that rolls over mid-test would admit twice: start early in one.
    seconds = time.time() % 60
    if seconds > 45:
        time.sleep(61 - seconds)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_before_the_answer_still_leaves_a_settled_row(live, priced_demo, stream):
    world = priced_demo
    world.demo.options = {"latency_ms": 1500}
    world.demo.save()
    budget = Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal(1), hard=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(live.url + "/v1/chat/completions", timeout=httpx.Timeout(5, read=0.5),
                   headers={"Authorization": f"Bearer {world.red_key}"},
                   json={"model": "architect", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    row = _wait_for(lambda: Usage.objects.first())
    assert (row.status, row.http_status, row.error_code) == ("cancelled", 499, "client_disconnected")
    assert _wait_for(lambda: BudgetCounter.objects.filter(budget=budget, reserved=0).exists())
    assert Reservation.objects.count() == 0


def test_a_stream_without_max_tokens_reserves_the_models_maximum_or_the_persona_cap(live, priced_demo):
    from personas.models import Persona

    world = priced_demo
    world.demo.options = {"latency_ms": 0, "chunk_delay_ms": 0}
    world.demo.save()
    Model.objects.filter(provider=world.demo, name="demo").update(max_output_tokens=4096)
    # room for 1,000 output tokens: a stream that may produce 4,096 is refused
    Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal("0.001"), hard=True)
    body = {"model": "architect", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {world.red_key}"}
    refused = httpx.post(live.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    # with a persona cap of 5 output tokens the worst case fits, and the cap holds on the call
    Persona.objects.filter(slug="architect").update(max_output_tokens=5)
    Persona.objects.get(slug="architect").save()  # signals: drop cached config
    with httpx.stream("POST", live.url + "/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    finish = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in lines if json.loads(line[6:])["choices"]]
    assert finish[-1] == "length"
    row = _wait_for(lambda: Usage.objects.filter(status="ok").first())
    assert row.output_tokens <= 5
