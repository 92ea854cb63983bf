"""PostgreSQL stopped under load (pg_ctl stop -m immediate) and started again:
no answer leaves without its Usage row, none is doubled, no reservation stays
held, and every budget's spend equals its ledger. The database is the test's
own (tests/fault_support.py), never the shared one; the gateway is a live
server pointed at it, with its own ledger spool."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import start_daphne, stop_process
from tests.fakes.common import FakeReply, Fault
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fault_support import OwnPostgres, manage, wait_until

pytestmark = pytest.mark.slow

# Two teams: `capped` has a hard budget (its requests reserve, so the database
# must be up to admit them), `free` has none (admitted and answered while the
# database is down: their rows go to the spool).
SEED = """
import json
from decimal import Decimal
from accounts.models import ApiKey, Team
from budgets.models import Budget
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
provider = Provider(name="openai", kind="openai", base_url="{base_url}/v1", read_timeout=10)
provider.set_credential("sk-test-outage")
provider.save()
Model.objects.create(provider=provider, name="gpt-4o-mini", input_price=1, output_price=2)
persona = Persona.objects.create(slug="outage")
RouteStep.objects.create(persona=persona, provider=provider, model="gpt-4o-mini")
capped, free = Team.objects.create(name="capped"), Team.objects.create(name="free")
Budget.objects.create(name="capped", scope="team", team=capped, limit_usd=Decimal(1000), hard=True)
print(json.dumps({{"capped": ApiKey.issue(team=capped, name="k")[1], "free": ApiKey.issue(team=free, name="k")[1]}}))
"""


@dataclass
class Load:
    """Clients that keep sending chat requests (some streamed) until stopped."""

    url: str
    keys: dict[str, str]
    outcomes: list[dict] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not self.stopping.is_set():
                team = ("capped", "free")[(worker + n) % 2]
                outcome = self.one(client, team, stream=n % 3 == 2)
                with self.lock:
                    self.outcomes.append({"team": team, "at": time.monotonic(), **outcome})
                n += 1

    def one(self, client: httpx.Client, team: str, stream: bool) -> dict:
        body = {"model": "outage", "max_tokens": 20, "stream": stream,
                "messages": [{"role": "user", "content": "how is the database?"}]}
        headers = {"Authorization": f"Bearer {self.keys[team]}"}
        try:
            with client.stream("POST", self.url + "/v1/chat/completions", json=body, headers=headers) as response:
                text = response.read().decode()
        except httpx.HTTPError as error:
            return {"status": None, "error": type(error).__name__}
        answered = response.status_code == 200 and (
            "data: [DONE]" in text if stream else bool(json.loads(text).get("choices")))
        code = json.loads(text)["error"]["code"] if response.status_code != 200 else ""
        return {"status": response.status_code, "id": response.headers.get("x-request-id"), "answered": answered,
                "code": code, "stream": stream}


@pytest.fixture
def own_postgres():
    pg = OwnPostgres().create()
    yield pg
    pg.destroy()


@pytest.fixture
def slow_fake():
    fake = FakeOpenAIServer().start()
    # Each answer takes 0.15 s upstream: requests are in flight when the database stops.
    fake.default_reply = Fault("stall", seconds=0.15, reply=FakeReply(text="fine", output_tokens=5))
    yield fake
    fake.stop()


def test_postgres_stopped_under_load_loses_no_answer_and_doubles_nothing(own_postgres, slow_fake, tmp_path):
    pg = own_postgres
    url = pg.create_database("gateway")
    manage(url, "migrate", "--no-input")
    keys = json.loads(manage(url, "shell", "-c", SEED.format(base_url=slow_fake.base_url)).strip().splitlines()[-1])
    # No Redis: other test runs on the shared one bump the config generation,
    # and a reload while the database is down refuses everything (before auth).
    server = start_daphne(url, name="gateway-pg-outage", EP_SPOOL_DIR=str(tmp_path / "spool"), REDIS_URL="")
    load = Load(server.url, keys)
    try:
        with ThreadPoolExecutor(6) as pool:
            workers = [pool.submit(load.run, i) for i in range(6)]
            try:
                time.sleep(2)
                stopped_at = time.monotonic()
                pg.stop("immediate")
                time.sleep(3)  # the clients keep sending
                restarted_at = time.monotonic()
                pg.start()
                time.sleep(3)
            finally:
                load.stopping.set()
            for worker in workers:
                worker.result()
        health = wait_until(lambda: _recovered(server.url), 30, "the spool replayed and the database back")
    finally:
        stop_process(server.process)
    _assert_the_ledger_holds_every_answer_once(pg, load.outcomes, stopped_at, restarted_at, health, server)


def _recovered(url: str) -> dict | None:
    body = httpx.get(url + "/health", timeout=5).json()
    return body if body["database"] == "ok" and body["ledger_spool"]["rows"] == 0 else None


def _assert_the_ledger_holds_every_answer_once(pg, outcomes, stopped_at, restarted_at, health, server) -> None:
    statuses = Counter((o["status"], o["code"]) for o in outcomes)
    during = [o for o in outcomes if stopped_at < o["at"] < restarted_at]
    # No 500, no client-side failure: every request got an answer or a refusal with a code.
    assert set(statuses) <= {(200, ""), (503, "budget_store_unavailable")}, statuses
    # While the database was down: free requests were answered (their rows spooled),
    # capped ones refused at admission rather than admitted unrecorded.
    assert any(o["team"] == "free" and o["answered"] for o in during), statuses
    assert any(o["code"] == "budget_store_unavailable" for o in during), statuses
    assert all(o["answered"] for o in outcomes if o["status"] == 200)
    assert "spooled until the database is back" in server.log_text()

    ids = [o["id"] for o in outcomes]
    rows = dict(pg.query("gateway", "SELECT request_id, COUNT(*) FROM budgets_usage GROUP BY request_id"))
    assert sorted(rows) == sorted(ids), "Usage rows != requests answered or refused"
    assert set(rows.values()) == {1}, "a request has two rows"
    assert pg.query("gateway", "SELECT COUNT(*) FROM budgets_reservation") == [(0,)]
    [(reserved, spent)] = pg.query("gateway", "SELECT SUM(reserved), SUM(spent) FROM budgets_budgetcounter")
    [(ledger,)] = pg.query("gateway", "SELECT SUM(u.cost_usd) FROM budgets_usage u "
                                      "JOIN gateway_team t ON t.id = u.team_id WHERE t.name = 'capped'")
    assert reserved == 0 and spent == ledger > 0
    assert health["ledger_spool"]["rejected_rows"] == 0
    print(f"\n{len(outcomes)} requests: {dict(statuses)}; {len(during)} while the database was down; "
          f"{len(rows)} Usage rows")
