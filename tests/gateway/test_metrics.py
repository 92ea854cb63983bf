"""GET /metrics: who may scrape it, and that real requests through the live
gateway move the counters, histograms, token and cost totals, budget gauges and
the in-flight gauge; several processes add up through one multiprocess dir."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from decimal import Decimal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from budgets.models import Budget, Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.conftest import start_daphne, stop_process
from tests.fakes.common import FakeReply, Fault

Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str, key: str) -> Samples:
    response = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(response.text)
            for s in family.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, got, v in samples if n == name and all(got.get(k) == w for k, w in labels.items()))


def chat(url: str, key: str, model: str, *, stream: bool = False, **extra) -> httpx.Response:
    with httpx.Client(timeout=15) as client:
        return client.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                           json={"model": model, "messages": [{"role": "user", "content": "hello"}],
                                 "stream": stream, **extra})


@pytest.fixture
def via_openai(fake, world):
    fake.reset()
    # One attempt, no retry: a failure reaches the ledger as it is. A name of its own:
    # the live server's circuit breakers (keyed by provider name) outlive each test.
    provider = Provider(name="metrics-openai", kind="openai", base_url=fake.base_url + "/v1", read_timeout=5,
                        options={"max_attempts": 1})
    provider.set_credential("sk-test-metrics-0123456789")
    provider.save()
    Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    persona = Persona.objects.create(slug="via-openai")
    RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
    return fake


@pytest.mark.parametrize("who, status, code", [
    (None, 401, "invalid_api_key"),
    ("ep-not-a-real-key-0000000000000000", 401, "invalid_api_key"),
    ("red_key", 403, "admin_scope_required"),
])
def test_metrics_refuse_anyone_without_an_admin_key(live, world, who, status, code):
    key = getattr(world, who) if who == "red_key" else who
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(live.url + "/metrics", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "ep_requests" not in response.text
    # a known key leaves its refused row; an unknown key has nobody to bill
    assert Usage.objects.filter(status="refused", error_code=code).count() == (1 if who == "red_key" else 0)


def test_metrics_answer_an_admin_key_and_each_scrape_is_one_ledger_row(live, world):
    samples = scrape(live.url, world.admin_key)
    assert any(name == "ep_requests_in_flight" for name, _, _ in samples)
    row = Usage.objects.get()  # an authenticated request like any other: one row, free
    assert (row.endpoint, row.status, row.cost_usd) == ("metrics", "ok", 0)


def test_requests_move_the_counters_histograms_tokens_and_cost(live, world, via_openai):
    before = scrape(live.url, world.admin_key)
    via_openai.script(FakeReply(text="one", input_tokens=30, output_tokens=7),
                      FakeReply(text="two words here", input_tokens=30, output_tokens=5),
                      Fault("status", status=500, message="boom"))
    assert chat(live.url, world.red_key, "via-openai").status_code == 200
    streamed = chat(live.url, world.red_key, "via-openai", stream=True, stream_options={"include_usage": True})
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    assert chat(live.url, world.red_key, "via-openai").status_code == 502
    assert chat(live.url, world.red_key, "no-such-persona").status_code == 404
    after = scrape(live.url, world.admin_key)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    ours = {"persona": "via-openai", "provider": "metrics-openai", "model": via_openai.model}
    assert moved("ep_requests_total", **ours, status="ok", code="200") == 2
    assert moved("ep_requests_total", **ours, status="error", code="502") == 1
    assert moved("ep_requests_total", persona="", status="refused", code="404") == 1
    assert moved("ep_request_duration_seconds_count", **ours, status="ok") == 2
    assert moved("ep_request_duration_seconds_count", **ours, status="error") == 1
    assert moved("ep_request_duration_seconds_bucket", **ours, status="ok", le="+Inf") == 2
    assert moved("ep_time_to_first_token_seconds_count", **ours) == 2
    assert moved("ep_tokens_total", **ours, type="input") == 60
    assert moved("ep_tokens_total", **ours, type="output") == 12
    rows = Usage.objects.filter(persona="via-openai")
    cost = float(sum(r.cost_usd for r in rows))
    assert cost > 0 and moved("ep_cost_usd_total", **ours) == pytest.approx(cost, rel=1e-6)
    assert total(after, "ep_requests_in_flight") == 0


def test_budget_utilization_is_read_from_the_budget_counters(live, world, via_openai):
    budget = Budget.objects.create(name="red monthly", scope="team", team=world.red, period="month",
                                   limit_usd=Decimal("0.50"))
    via_openai.script(FakeReply(text="counted", input_tokens=1000, output_tokens=500))
    assert chat(live.url, world.red_key, "via-openai").status_code == 200
    samples = scrape(live.url, world.admin_key)
    labels = {"budget": "red monthly", "budget_id": str(budget.id), "scope": "team", "period": "month"}
    spent = float(sum(r.cost_usd for r in Usage.objects.filter(team=world.red)))
    assert spent > 0
    assert total(samples, "ep_budget_spent_usd", **labels) == pytest.approx(spent)
    assert total(samples, "ep_budget_limit_usd", **labels) == 0.5
    assert total(samples, "ep_budget_utilization_ratio", **labels) == pytest.approx(spent / 0.5)
    assert total(samples, "ep_budget_reserved_usd", **labels) == 0


def test_a_stream_is_in_flight_until_its_body_ends(live, world, via_openai):
    via_openai.script(FakeReply(text="x" * 40, chunk_size=2, chunk_delay=0.1))  # about 2 s
    done = threading.Event()
    threading.Thread(target=lambda: (chat(live.url, world.red_key, "via-openai", stream=True), done.set()),
                     daemon=True).start()
    seen = 0.0
    deadline = time.monotonic() + 5
    while not done.is_set() and time.monotonic() < deadline:
        seen = max(seen, total(scrape(live.url, world.admin_key), "ep_requests_in_flight"))
        time.sleep(0.05)
    assert done.wait(10)
    assert seen == 1
    assert total(scrape(live.url, world.admin_key), "ep_requests_in_flight") == 0


def test_breaker_state_is_a_gauge_per_provider_and_model():
    from gateway.observability import metrics

    metrics.set_breaker_state("openai", "gpt-4o-mini", "open")
    metrics.set_breaker_state("anthropic", "claude-x", 1)
    body = metrics.exposition()[0].decode()
    samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body) for s in f.samples]
    assert total(samples, "ep_breaker_state", provider="openai", model="gpt-4o-mini") == 2
    assert total(samples, "ep_breaker_state", provider="anthropic", model="claude-x") == 1
    metrics.set_breaker_state("openai", "gpt-4o-mini", "closed")
    body = metrics.exposition()[0].decode()
    samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body) for s in f.samples]
    assert total(samples, "ep_breaker_state", provider="openai", model="gpt-4o-mini") == 0
    with pytest.raises(ValueError):
        metrics.set_breaker_state("openai", "gpt-4o-mini", 7)


# -- several processes ----------------------------------------------------------------------------


@pytest.fixture
def two_processes(test_database_url, tmp_path):
    shared = tmp_path / "prometheus"
    (shared).mkdir()
    (shared / "counter_999999999.db").write_bytes(b"stale from an earlier run")
    servers = []
    try:
        for name in ("metrics-a", "metrics-b"):
            servers.append(start_daphne(test_database_url, name=name, PROMETHEUS_MULTIPROC_DIR=str(shared)))
        yield servers, shared
    finally:
        for server in servers:
            stop_process(server.process)


def test_several_processes_add_up_through_the_multiprocess_directory(transactional_db, world, two_processes):
    (a, b), shared = two_processes
    assert not (shared / "counter_999999999.db").exists()  # the first process cleaned the old run's files
    for server, times in ((a, 2), (b, 3)):
        for _ in range(times):
            assert chat(server.url, world.red_key, "architect").status_code == 200
    for server in (a, b):  # either process answers for both
        samples = scrape(server.url, world.admin_key)
        assert total(samples, "ep_requests_total", persona="architect", status="ok") == 5
        assert total(samples, "ep_request_duration_seconds_count", persona="architect") == 5
    pids = {p.process.pid for p in (a, b)}
    assert {int(f.stem.rsplit("_", 1)[1]) for f in shared.glob("counter_*.db")} == pids


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_process_joining_live_ones_keeps_their_counters_and_drops_dead_live_gauges(tmp_path):
    from gateway.observability.metrics import prepare_multiproc_dir

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = _dead_pid()
    try:
        for name in (f"counter_{live.pid}.db", f"counter_{dead}.db", f"gauge_livesum_{dead}.db",
                     f"gauge_livesum_{live.pid}.db"):
            (tmp_path / name).write_bytes(b"")
        prepare_multiproc_dir(tmp_path)
        left = {f.name for f in tmp_path.iterdir()}
        # Counters of a dead process stay (totals never go backwards); its live gauge goes.
        assert {f"counter_{live.pid}.db", f"counter_{dead}.db", f"gauge_livesum_{live.pid}.db"} <= left
        assert f"gauge_livesum_{dead}.db" not in left
        assert f"process_{os.getpid()}.pid" in left
    finally:
        live.kill()
        live.wait()
    prepare_multiproc_dir(tmp_path)  # now nobody else is alive: a fresh start
    assert {f.name for f in tmp_path.iterdir()} == {".lock", f"process_{os.getpid()}.pid"}


# -- the deployment files -----------------------------------------------------------------------


def test_the_grafana_dashboard_queries_only_what_the_gateway_exports(db, world):
    import json
    import re
    from pathlib import Path

    from gateway.observability import metrics

    Budget.objects.create(name="any", scope="global", period="day", limit_usd=Decimal(1))
    metrics.observe_usage(Usage(request_id="req_x", persona="p", provider="demo", model="demo", status="ok",
                                input_tokens=1, output_tokens=1, cost_usd=Decimal("0.1"), latency_ms=5, ttft_ms=2))
    metrics.set_breaker_state("demo", "demo", 0)
    exported = {s.name for f in text_string_to_metric_families(metrics.exposition()[0].decode()) for s in f.samples}
    platform = Path(__file__).resolve().parents[2] / "platform"
    dashboard = json.loads((platform / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"\bep_[a-z_]+", expr)}
    assert len(dashboard["panels"]) >= 10 and queried and queried <= exported, queried - exported
    scrape_config = (platform / "prometheus.yml").read_text()
    assert "metrics_path: /metrics" in scrape_config and "credentials_file:" in scrape_config
    assert not list(platform.glob("*.py")) and not (platform / "__init__.py").exists()
