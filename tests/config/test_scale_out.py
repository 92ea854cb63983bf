"""Two gateway instances (`python -m config.serve`, one port each, standing for
two hosts) behind HAProxy with platform/haproxy.cfg, sharing the database (and
Redis when REDIS_URL is set). Through the proxy: budgets stay exact across the
instances, streams pass chunk by chunk, a route edited on one is served by the
other within EP_CONFIG_CHECK_SECONDS, breakers and live events are shared
(Redis), and a rolling restart of both under steady load loses no request and
leaves no reservation.

HAProxy comes from Debian (scripts/install-proxy.sh, run by `make test`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command

from accounts.models import ApiKey, Team
from budgets.models import Budget, BudgetCounter, Reservation, Usage
from personas.models import RouteStep
from providers.models import Model, Provider
from tests.conftest import ARTIFACTS, ROOT, _free_port
from tests.fault_support import wait_until
from tests.platform_support import Served, healthy, start_serve
from tests.streaming_support import bearer, chat_frame, frames_until_terminal, open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HAPROXY = "/usr/sbin/haproxy"
# The production default (platform/env.example): how often an instance asks
# whether another one changed the configuration. The stated time for an edit
# made on one instance to be served by the other is this, plus one request.
CONFIG_CHECK_SECONDS = 1.0
INSTANCE_ENV = {"EP_CONFIG_CHECK_SECONDS": str(CONFIG_CHECK_SECONDS)}
WORST_CASE = Decimal("0.00001")  # max_tokens=10 at $1/M output tokens, input free


class Proxy:
    """HAProxy in the foreground, on platform/haproxy.cfg unchanged."""

    def __init__(self, gateways: list[Served]) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ep-haproxy-"))
        self.admin_socket = self.base / "admin.sock"
        self.port = _free_port()
        env = {**os.environ, "EP_PROXY_BIND": f"127.0.0.1:{self.port}", "EP_PROXY_HEALTH_HOST": "127.0.0.1",
               "EP_PROXY_ADMIN_SOCKET": str(self.admin_socket),
               "EP_GATEWAY_1": f"127.0.0.1:{gateways[0].port}", "EP_GATEWAY_2": f"127.0.0.1:{gateways[1].port}"}
        self.log_path = ARTIFACTS / f"haproxy-{self.port}.log"
        self.process = subprocess.Popen([HAPROXY, "-db", "-f", str(ROOT / "platform" / "haproxy.cfg")], env=env,
                                        stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.states() == {"gateway1": "UP", "gateway2": "UP"}, 15, "HAProxy sees both gateways")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, dict[str, str]]:
        """`show stat` of the gateways backend, per server, from the runtime API."""
        if self.process.poll() is not None:
            raise RuntimeError(f"haproxy exited:\n{self.log_path.read_text()}")
        try:
            with socket.socket(socket.AF_UNIX) as admin:
                admin.connect(str(self.admin_socket))
                admin.sendall(b"show stat\n")
                raw = b"".join(iter(lambda: admin.recv(65536), b"")).decode()
        except OSError:
            return {}
        header, *lines = [line for line in raw.splitlines() if line]
        names = header.lstrip("# ").split(",")
        rows = [dict(zip(names, line.split(","), strict=False)) for line in lines]
        return {row["svname"]: row for row in rows
                if row["pxname"] == "gateways" and row["svname"] in ("gateway1", "gateway2")}

    def states(self) -> dict[str, str]:
        return {name: row["status"] for name, row in self.stats().items()}

    def sessions(self) -> dict[str, int]:
        return {name: int(row["stot"]) for name, row in self.stats().items()}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.base, ignore_errors=True)


class Cluster:
    # The second instance runs two workers under config.serve's supervisor, as
    # the systemd unit and compose do: SIGTERM reaches its workers through it.
    WORKERS = (1, 2)

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.gateways: list[Served] = []
        self.proxy: Proxy | None = None
        try:
            for index in (0, 1):
                self.gateways.append(self._start(index))
            self.proxy = Proxy(self.gateways)
        except BaseException:
            self.stop()  # nothing left running when the cluster cannot start
            raise

    def _start(self, index: int, port: int | None = None) -> Served:
        return start_serve(self.database_url, name=f"scale-out-{index + 1}", port=port, grace=20,
                           workers=self.WORKERS[index], **INSTANCE_ENV)

    def restart(self, index: int) -> None:
        """What a deploy does to one host: SIGTERM (it drains), then start it again."""
        old = self.gateways[index]
        assert old.stop(timeout=40) == 0, old.log_text()[-3000:]
        self.gateways[index] = self._start(index, port=old.port)
        name = f"gateway{index + 1}"
        wait_until(lambda: self.proxy.states().get(name) == "UP", 15, f"HAProxy sees {name} up again")

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for gateway in self.gateways:
            try:
                gateway.stop(timeout=40)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def cluster(test_database_url):
    if not Path(HAPROXY).exists():
        pytest.fail("HAProxy is missing: run scripts/install-proxy.sh (make test does)")
    cluster = Cluster(test_database_url)
    try:
        yield cluster
    finally:
        cluster.stop()
    for gateway in cluster.gateways:
        assert "Traceback" not in gateway.log_text(), gateway.log_text()[-3000:]


def config_seen() -> None:
    """What the test just wrote is seen by both instances' next requests."""
    time.sleep(CONFIG_CHECK_SECONDS + 0.2)


@pytest.fixture
def priced_demo(world):
    Model.objects.filter(provider=world.demo, name="demo").update(input_price=0, output_price=1)
    world.demo.options = {"latency_ms": 150, "chunk_delay_ms": 10}
    world.demo.save()
    return world


def ask(url: str, key: str, *, stream: bool = False, run_id: str = "", **body) -> tuple[int, str, httpx.Headers]:
    """One chat; for a stream, (status, its last data line)."""
    payload = {"model": "architect", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
               "stream": stream, **body}
    headers = {**bearer(key), "X-EP-Run-Id": run_id} if run_id else bearer(key)
    if not stream:
        reply = httpx.post(url + "/v1/chat/completions", json=payload, headers=headers, timeout=30)
        return reply.status_code, reply.text, reply.headers
    with httpx.stream("POST", url + "/v1/chat/completions", json=payload, headers=headers, timeout=30) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data:")]
        return reply.status_code, lines[-1] if lines else "", reply.headers


def verified() -> str:
    out = StringIO()
    call_command("ledger_verify", stdout=out)
    return out.getvalue()


def test_a_budget_is_exact_across_both_instances(cluster, priced_demo):
    world = priced_demo
    budget = Budget.objects.create(name="red shared", scope="team", team=world.red, limit_usd=WORST_CASE * 8,
                                   thresholds=[])
    config_seen()
    before = cluster.proxy.sessions()
    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(lambda i: ask(cluster.proxy.url, world.red_key, stream=i % 2 == 1)[0], range(24)))
    after = cluster.proxy.sessions()
    assert sorted(statuses) == [200] * 8 + [429] * 16, statuses
    assert all(after[name] > before[name] for name in after), (before, after)  # both instances served
    counter = BudgetCounter.objects.get(budget=budget)
    assert counter.spent == WORST_CASE * 8 and counter.reserved == 0
    assert Usage.objects.filter(team=world.red).count() == 24
    assert "no drift." in verified()


def test_a_route_edited_on_one_instance_is_served_by_the_other_within_the_check_interval(cluster, world):
    from django.contrib.auth import get_user_model

    from tests.dashboard.conftest import PASSWORD, FormSession

    Model.objects.create(provider=world.demo, name="demo-v2", input_price=0, output_price=0)
    get_user_model().objects.create_superuser("ops", "ops@localhost", PASSWORD)
    step = RouteStep.objects.get(persona__slug="architect", position=0)
    first, second = cluster.gateways
    config_seen()
    assert ask(second.url, world.red_key)[2]["x-ep-model"] == "demo"

    operator = FormSession(first)
    assert operator.log_in("ops").status_code == 302
    edit = operator.post(f"/dashboard/personas/architect/steps/{step.id}/",
                         {f"s{step.id}-provider": "demo", f"s{step.id}-model": "demo-v2", f"s{step.id}-params": "{}"},
                         headers={"HX-Request": "true"})
    edited_at = time.monotonic()  # the edit is committed before its answer
    assert edit.status_code == 200 and "Saved demo/demo-v2" in edit.text, edit.text[:2000]
    assert ask(first.url, world.red_key)[2]["x-ep-model"] == "demo-v2"  # the editing instance: at once

    # An instance asks whether the configuration changed at most every
    # CONFIG_CHECK_SECONDS, so a request it starts that long after the edit was
    # saved is served by the new route. The deadline allows half a second more
    # for a loaded test machine to schedule the two processes (CI has seen the
    # first request after exactly CONFIG_CHECK_SECONDS + 0.05 s still served old).
    time.sleep(max(0.0, edited_at + CONFIG_CHECK_SECONDS + 0.05 - time.monotonic()))
    models = []
    while not models or (models[-1] != "demo-v2" and time.monotonic() < edited_at + CONFIG_CHECK_SECONDS + 0.5):
        models.append(ask(second.url, world.red_key)[2]["x-ep-model"])
    assert models[-1] == "demo-v2", models
    assert {ask(cluster.proxy.url, world.red_key)[2]["x-ep-model"] for _ in range(4)} == {"demo-v2"}


def test_a_stream_through_the_proxy_arrives_chunk_by_chunk(cluster, world):
    world.demo.options = {"latency_ms": 0, "chunk_delay_ms": 150}
    world.demo.save()
    config_seen()
    arrivals = []
    with httpx.stream("POST", cluster.proxy.url + "/v1/chat/completions", headers=bearer(world.red_key), timeout=30,
                      json={"model": "architect", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data:") and '"content"' in line:
                arrivals.append(time.monotonic())
    # ~13 chunks 150 ms apart: a proxy that buffered the response would hand
    # them over at once, at the end.
    assert len(arrivals) >= 8
    assert arrivals[-1] - arrivals[0] >= 0.1 * (len(arrivals) - 1), arrivals


@pytest.mark.skipif(not settings.REDIS_URL, reason="breakers are shared through Redis; without it each "
                    "process keeps its own (README, resilience)")
def test_a_breaker_opened_on_one_instance_is_open_on_the_other(cluster, world):
    from personas.models import Persona

    name = f"flaky-{uuid.uuid4().hex[:8]}"
    flaky = Provider.objects.create(name=name, kind="demo", read_timeout=5, options={
        "fail_with": "unavailable", "latency_ms": 0, "breaker_min_calls": 2, "breaker_failure_ratio": 0.5,
        "breaker_cooldown_seconds": 120})
    Model.objects.create(provider=flaky, name="demo", input_price=0, output_price=0)
    chain = Persona.objects.create(slug=f"chain-{uuid.uuid4().hex[:6]}")
    RouteStep.objects.create(persona=chain, position=0, provider=flaky, model="demo", params={"max_attempts": 1})
    RouteStep.objects.create(persona=chain, position=1, provider=world.demo, model="demo")
    config_seen()
    first, second = cluster.gateways
    for _ in range(2):  # both fail over to the demo; the flaky provider's breaker opens on the first instance
        status, _, headers = ask(first.url, world.red_key, model=chain.slug)
        assert (status, headers["x-ep-provider"]) == (200, "demo")
    time.sleep(float(os.environ.get("EP_BREAKER_SHARED_CHECK_SECONDS", "1")) + 0.2)
    status, _, headers = ask(second.url, world.red_key, model=chain.slug, run_id="after-open")
    assert (status, headers["x-ep-provider"]) == (200, "demo")
    row = Usage.objects.get(run_id="after-open")
    skipped, served = row.attempt_log  # the open breaker skipped without a call, then the demo
    assert (skipped["provider"], skipped["error"]) == (name, f"circuit breaker open for {name}/demo"), skipped
    assert (served["provider"], served["outcome"]) == ("demo", "ok")


@pytest.mark.skipif(not settings.REDIS_URL, reason="live events cross processes through the Redis channel "
                    "layer; without it each process has its own (docs/STREAMING.md)")
def test_live_events_and_websocket_chats_cross_instances_through_the_proxy(cluster, world):
    config_seen()
    proxy = type("Url", (), {"url": cluster.proxy.url})

    async def scenario() -> tuple[set[str], list[dict]]:
        async with open_socket(proxy, "/ws/v1/events", key=world.admin_key) as watcher:
            ids = set()
            for gateway in cluster.gateways:  # one request on each instance: the watcher is on one of them
                reply = await asyncio.to_thread(httpx.post, gateway.url + "/api/v1/chat", headers=bearer(world.red_key),
                                                json={"persona": "architect",
                                                      "messages": [{"role": "user", "content": "hi"}]})
                assert reply.status_code == 200
                ids.add(reply.headers["x-request-id"])
            seen = set()
            async with asyncio.timeout(10):
                while seen != ids:
                    event = json.loads(await watcher.recv())
                    if event["kind"] == "usage" and event["data"]["request_id"] in ids:
                        seen.add(event["data"]["request_id"])
        async with open_socket(proxy, "/ws/v1/chat", key=world.red_key) as chat:
            await chat.send(chat_frame("c1", "architect", "hi"))
            frames = await frames_until_terminal(chat, {"c1"})
        return seen, frames

    seen, frames = asyncio.run(scenario())
    assert len(seen) == 2
    assert frames[-1]["type"] == "done" and any(f["type"] == "delta" for f in frames)


class SteadyLoad:
    """Clients sending chats (half of them streams) through the proxy one
    after another until stopped; every answer is checked."""

    def __init__(self, url: str, key: str, clients: int) -> None:
        self.url, self.key = url, key
        self.run_id = f"rolling-{uuid.uuid4().hex[:8]}"
        self.sent = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]

    def _client(self, n: int) -> None:
        stream = n % 2 == 1
        while not self.stopping.is_set():
            with self.lock:
                self.sent += 1
            try:
                status, last, _ = ask(self.url, self.key, stream=stream, run_id=self.run_id)
                ok = status == 200 and (last == "data: [DONE]" if stream else '"choices"' in last)
                if not ok:
                    self.failures.append(f"{status} {last[:200]}")
            except httpx.HTTPError as error:
                self.failures.append(repr(error))

    def __enter__(self) -> SteadyLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_a_rolling_restart_under_steady_load_loses_no_request_and_leaves_no_reservation(cluster, priced_demo):
    # A team of its own: a new counter starts from the team's spend in the ledger this
    # month, and rows of earlier tests' requests may still be settling into it.
    team = Team.objects.create(name="rolling")
    _, key = ApiKey.issue(team=team, name="rolling load")
    budget = Budget.objects.create(name="rolling", scope="team", team=team, limit_usd=Decimal(100),
                                   thresholds=[])  # hard: every request reserves, then settles
    config_seen()
    with SteadyLoad(cluster.proxy.url, key, clients=4) as load:
        time.sleep(1)
        for index in (0, 1):
            cluster.restart(index)
            time.sleep(1)
        with load.lock:
            during = load.sent
    assert load.failures == [], load.failures[:5]
    assert during >= 20, during
    rows = Usage.objects.filter(run_id=load.run_id)
    assert rows.count() == load.sent and set(rows.values_list("status", flat=True)) == {"ok"}
    assert not Reservation.objects.exists()
    assert BudgetCounter.objects.get(budget=budget).spent == WORST_CASE * load.sent
    assert "no drift." in verified()
    assert all(healthy(gateway.url) for gateway in cluster.gateways)

