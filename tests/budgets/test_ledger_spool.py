"""The ledger's spool (budgets/spool.py, budgets/recovery.py): a settlement the
database refuses waits on local disk and is replayed once it is back, settling
the budgets exactly as the first try would have; a replay doubles nothing; the
spool is bounded. The database "fails" here by its Usage table being renamed
away, on whichever database the tests run; tests/budgets/test_database_outage.py
stops a real PostgreSQL instead."""

from __future__ import annotations

import contextlib
import io
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection
from django.db.models import Sum

from budgets import ledger, spool
from budgets.models import Budget, BudgetCounter, Reservation, Usage
from budgets.recovery import spool_replay
from budgets.snapshot import budget_info
from providers.models import Model
from tests.conftest import start_daphne, stop_process


@contextlib.contextmanager
def usage_table_away():
    """Every settlement fails (no table to insert into) until the block ends."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE budgets_usage RENAME TO budgets_usage_away")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE budgets_usage_away RENAME TO budgets_usage")


@pytest.fixture
def own_spool(settings, tmp_path):
    settings.EP_SPOOL_DIR = str(tmp_path / "spool")  # not the live servers' directory
    return tmp_path / "spool"


@pytest.fixture
def red_budget(world):
    ledger.forget_counters()
    return budget_info(Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal(1),
                                             hard=True, thresholds=[]))


def row(world, request_id: str, cost: str, attempts: int = 1) -> Usage:
    return Usage(request_id=request_id, team=world.red, api_key_id=None, persona="architect", provider="demo",
                 model="demo", cost_usd=Decimal(cost), attempts=attempts, attempt_log=[{"provider": "demo"}])


def assert_counter_equals_the_ledger(budget) -> None:
    counter = BudgetCounter.objects.get(budget_id=budget.id)
    spent = Usage.objects.filter(team_id=budget.team_id).aggregate(s=Sum("cost_usd"))["s"] or 0
    assert counter.spent == Decimal(spent).quantize(Decimal("0.00000001"))
    assert counter.reserved == 0 and Reservation.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_settlement_the_database_refuses_waits_in_the_spool_and_is_replayed_once(world, red_budget, own_spool):
    ledger.budget_reserve(request_id="req_down", budgets=[red_budget], amount=Decimal("0.5"))
    answered = row(world, "req_down", "0.12345678")
    answered.created_at -= timedelta(minutes=2)
    with usage_table_away():
        crossings = ledger.usage_settle(row=answered, budgets=[red_budget])
        assert crossings == []  # the caller resumed: the row is on disk
        assert spool.stats() == {**spool.stats(), "rows": 1, "full": False}
        assert 120 <= spool.stats()["oldest_age_seconds"] < 180
        assert spool_replay().waiting == 1  # still refused: it stays
    assert BudgetCounter.objects.get(budget_id=red_budget.id).reserved == Decimal("0.5")  # held meanwhile

    replayed = spool_replay()
    assert (replayed.rows, replayed.skipped, replayed.waiting) == (1, 0, 0)
    stored = Usage.objects.get(request_id="req_down")
    assert (stored.cost_usd, stored.attempts, stored.attempt_log) == (Decimal("0.12345678"), 1, [{"provider": "demo"}])
    assert_counter_equals_the_ledger(red_budget)
    assert spool.stats()["rows"] == 0 and not list(own_spool.iterdir())

    # The same settlement spooled again (a replay cut short before it removed
    # its file): the row is there already, nothing is doubled.
    spool.append([(stored, [red_budget.id])])
    assert spool_replay().skipped == 1
    assert Usage.objects.filter(request_id="req_down").count() == 1
    assert_counter_equals_the_ledger(red_budget)


@pytest.mark.django_db(transaction=True)
def test_a_torn_line_is_set_aside_and_the_rest_replayed(world, red_budget, own_spool):
    spool.append([(row(world, "req_whole", "0.1"), [red_budget.id])])
    [path] = own_spool.glob("*.spool")
    with path.open("ab") as handle:
        handle.write(spool.encode(row(world, "req_torn", "0.2"), [red_budget.id])[:40])  # a crash mid-write
    replayed = spool_replay()
    assert (replayed.rows, replayed.rejected) == (1, 1)
    assert list(Usage.objects.values_list("request_id", flat=True)) == ["req_whole"]
    assert spool.stats() == {**spool.stats(), "rows": 0, "rejected_rows": 1}
    assert_counter_equals_the_ledger(red_budget)


@pytest.mark.django_db(transaction=True)
def test_a_settlement_spooled_while_a_replayer_holds_the_file_does_not_wait_for_it(world, own_spool):
    # A replayer holds the file it claimed while it waits for the ledger writer;
    # the writer, spooling another request, must not wait for that lock (it
    # would wait for itself: every request of the process would hang).
    with usage_table_away():
        ledger.usage_settle(row=row(world, "req_first", "0.1"), budgets=[])
        [claimed] = spool.claim()
        with ThreadPoolExecutor(1) as pool, spool.replaying(claimed) as lines:
            assert len(lines) == 1
            settled = pool.submit(ledger.usage_settle, row=row(world, "req_second", "0.1"), budgets=[])
            assert settled.result(timeout=10) == []
    assert spool_replay().rows == 2
    assert sorted(Usage.objects.values_list("request_id", flat=True)) == ["req_first", "req_second"]


@pytest.mark.django_db(transaction=True)
def test_past_its_bound_the_spool_keeps_paid_rows_and_drops_refusals(world, own_spool, settings):
    settings.EP_SPOOL_MAX_ROWS = 2
    with usage_table_away():
        for i in range(2):
            ledger.usage_settle(row=row(world, f"req_refused_{i}", "0", attempts=0), budgets=[])
        with pytest.raises(DatabaseError):  # its caller logs it as not recorded (gateway/recording.py)
            ledger.usage_settle(row=row(world, "req_refused_2", "0", attempts=0), budgets=[])
        ledger.usage_settle(row=row(world, "req_paid", "0.3"), budgets=[])
        assert spool.stats()["rows"] == 3 and spool.is_full()
    assert spool_replay().rows == 3 and not spool.is_full()
    assert sorted(Usage.objects.values_list("request_id", flat=True)) == ["req_paid", "req_refused_0",
                                                                         "req_refused_1"]


@pytest.mark.django_db(transaction=True)
def test_reservations_are_still_admitted_while_settlements_go_to_the_spool(world, red_budget, own_spool, settings):
    """On PostgreSQL the writer prepares a statement at its second use; when that
    use falls in a batch the database refused (no Usage table), the server
    skipped the PREPARE, and psycopg counted it prepared all the same: the next
    reservation failed ('prepared statement does not exist') and its request was
    refused though the database could take it. The writer starts a new session
    after a failed batch."""
    settings.EP_DB_PREPARED_STATEMENTS = True
    ledger.budget_reserve(request_id="req_warm", budgets=[red_budget], amount=Decimal("0.01"))
    ledger.usage_settle(row=row(world, "req_warm", "0.001"), budgets=[red_budget])
    with usage_table_away():
        for n in range(6):
            ledger.budget_reserve(request_id=f"req_{n}", budgets=[red_budget], amount=Decimal("0.01"))
            ledger.usage_settle(row=row(world, f"req_{n}", "0.001"), budgets=[red_budget])
        assert spool.stats()["rows"] == 6
    assert spool_replay().rows == 6
    assert_counter_equals_the_ledger(red_budget)


# -- through a live server ----------------------------------------------------------------------------


@pytest.fixture
def priced_demo(world):
    Model.objects.filter(provider=world.demo, name="demo").update(input_price=0, output_price=1)
    world.demo.options = {"latency_ms": 0, "chunk_delay_ms": 0}
    world.demo.save()
    return world


def ask(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {key}"},
                      json={"model": "architect", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})


def wait_for(probe, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_a_full_spool_refuses_new_requests_until_the_database_takes_it(live, priced_demo, test_database_url,
                                                                        tmp_path):
    """EP_SPOOL_MAX_ROWS=3: three answers wait in the spool while the ledger
    refuses them; the fourth request is refused (503 ledger_unavailable),
    /health and /metrics show the depth; once the ledger is back the
    sweeper replays the spool and requests are admitted again."""
    world = priced_demo
    budget = Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal(1), hard=True)
    server = start_daphne(test_database_url, name="gateway-spool", EP_SPOOL_MAX_ROWS="3",
                          EP_SPOOL_DIR=str(tmp_path / "spool"))
    try:
        assert ask(server.url, world.red_key).status_code == 200  # warm: key and routes in memory
        with usage_table_away():
            answered = [ask(server.url, world.red_key) for _ in range(3)]
            assert [r.status_code for r in answered] == [200, 200, 200]
            refused = ask(server.url, world.red_key)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "ledger_unavailable"
            health = httpx.get(server.url + "/health")
            assert health.status_code == 503
            assert health.json()["ledger_spool"] == {**health.json()["ledger_spool"], "rows": 3, "full": True}
            scraped = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {world.admin_key}"})
            assert "ep_ledger_spool_rows 3.0" in scraped.text
        wait_for(lambda: httpx.get(server.url + "/health").json()["ledger_spool"]["rows"] == 0)
        assert ask(server.url, world.red_key).status_code == 200
    finally:
        stop_process(server.process)
    ids = {r.headers["x-request-id"] for r in answered}
    assert ids <= set(Usage.objects.values_list("request_id", flat=True))
    # The refusal of the full spool has no row: nothing could record it (budgets/spool.py).
    assert not Usage.objects.filter(request_id=refused.headers["x-request-id"]).exists()
    assert Usage.objects.count() == 5
    assert_counter_equals_the_ledger(budget_info(budget))


@pytest.mark.django_db(transaction=True)
def test_an_operator_replays_the_spool_with_a_command(world, red_budget, own_spool):
    with usage_table_away():
        ledger.usage_settle(row=row(world, "req_cmd", "0.25"), budgets=[red_budget])
        with pytest.raises(CommandError, match="still unreachable"):
            call_command("replay_ledger_spool", stdout=io.StringIO())
    out = io.StringIO()
    call_command("replay_ledger_spool", stdout=out)
    assert out.getvalue().startswith("Settled 1 spooled row(s), 0 already in the ledger, 0 set aside; 0 waiting")
    assert Usage.objects.get().request_id == "req_cmd"
    assert_counter_equals_the_ledger(red_budget)


@pytest.mark.django_db(transaction=True)
def test_appends_from_many_threads_are_whole_lines(world, own_spool):
    def settle(i: int) -> None:
        spool.append([(row(world, f"req_thread_{i}", "0.01"), [])])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(settle, range(200)))
    assert spool.stats()["rows"] == 200
    assert spool_replay().rows == 200 and Usage.objects.count() == 200
