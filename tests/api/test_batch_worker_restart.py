"""A batch survives its worker dying: a worker process killed mid-batch
(SIGKILL, no goodbye), another started, and every request ends with exactly
one Usage row, budgets settled once; and each state a dead worker can leave a
request in is picked up as gateway/batch_worker.py says."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from budgets import spool
from budgets.models import Budget, BudgetCounter, Usage
from gateway.models import BatchRequest
from tests.api.batch_support import (
    chat_line,
    client,
    results,
    run_worker_until_idle,
    start_worker,
    upload,
    wait_for_batch,
)
from tests.streaming_support import wait_for

pytestmark = pytest.mark.slow


def test_a_batch_completes_after_its_worker_is_killed_mid_batch(live, world, test_database_url):
    sdk = client(live, world.red_key)
    budget = Budget.objects.create(name="red monthly", scope="team", team=world.red, period="month",
                                   limit_usd=Decimal(100))
    # Long calls, so that the kill, a moment after a look finds one running, still finds it running.
    world.demo.options = {"latency_ms": 1200, "chunk_delay_ms": 0}
    world.demo.save()
    custom_ids = [f"job-{i}" for i in range(8)]
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line(c, f"Do {c}") for c in custom_ids]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    rows = Usage.objects.filter(run_id=batch.id)
    in_flight = BatchRequest.objects.filter(batch_id=batch.id, state__in=("running", "answered"))

    first = start_worker(test_database_url, "--concurrency", "2", "--lease", "1.5")
    try:
        assert wait_for(lambda: rows.count() >= 2 and in_flight.filter(state="running").exists(), timeout=30,
                        interval=0.01)
    finally:
        first.kill()  # SIGKILL: its requests in flight are left claimed, under leases no one renews
        first.wait()
    orphans = dict(in_flight.values_list("id", "state"))
    assert orphans and rows.count() < 8

    run_worker_until_idle(test_database_url, "--concurrency", "2", "--lease", "1.5")

    done = wait_for_batch(sdk, batch.id, ("completed",))
    assert (done.request_counts.completed, done.request_counts.failed) == (8, 0)
    assert [line["custom_id"] for line in results(sdk, done.output_file_id)] == custom_ids
    assert rows.count() == 8 and rows.values("request_id").distinct().count() == 8  # one row each, no more
    assert sorted(rows.values_list("step", flat=True)) == custom_ids
    # Run again if the kill caught it running; only billed if it caught it answered.
    picked_up = BatchRequest.objects.filter(id__in=orphans)
    assert [(r.state, r.attempts) for r in picked_up] == [
        ("done", 2 if orphans[r.id] == "running" else 1) for r in picked_up]
    # The budget was charged once per request, and the dead worker's reservations were released.
    counter = BudgetCounter.objects.get(budget=budget)
    assert counter.spent == rows.aggregate(s=Sum("cost_usd"))["s"] and counter.reserved == 0


def _saved_row(item: BatchRequest, world, tokens: tuple[int, int]) -> Usage:
    return Usage(request_id=item.request_id, team=world.red, persona="architect", provider="demo", model="demo",
                 endpoint="v1.chat.completions", status="ok", input_tokens=tokens[0], output_tokens=tokens[1],
                 cost_usd=Decimal("0.00012300"), run_id=item.batch_id, step=item.custom_id)


def test_each_state_a_dead_worker_leaves_is_resumed_once(live, world, test_database_url):
    sdk = client(live, world.red_key)
    names = ["answered-unbilled", "answered-billed", "ran-twice", "ran-once", "never-ran"]
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line(n, f"Do {n}") for n in names]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    items = {r.custom_id: r for r in BatchRequest.objects.filter(batch_id=batch.id)}
    expired = timezone.now() - timedelta(seconds=5)
    saved_answer = {"id": "chatcmpl-saved", "object": "chat.completion", "choices": [], "usage": {}}
    # Died after saving the answer, before the ledger had the row; and after the ledger had it.
    for name, tokens in (("answered-unbilled", (3, 4)), ("answered-billed", (5, 6))):
        row = _saved_row(items[name], world, tokens)
        BatchRequest.objects.filter(id=items[name].id).update(
            state="answered", claim="dead-worker", lease_until=expired, attempts=1, status_code=200,
            response=saved_answer, ledger_line=spool.encode(row, []).decode())
    Usage.objects.bulk_create([_saved_row(items["answered-billed"], world, (5, 6))])
    # Died while running: for the second time, and for the first.
    BatchRequest.objects.filter(id=items["ran-twice"].id).update(state="running", claim="dead-worker",
                                                                 lease_until=expired, attempts=2)
    BatchRequest.objects.filter(id=items["ran-once"].id).update(state="running", claim="dead-worker",
                                                                lease_until=expired, attempts=1)

    run_worker_until_idle(test_database_url)

    done = wait_for_batch(sdk, batch.id, ("completed",))
    rows = {row.step: row for row in Usage.objects.filter(run_id=batch.id)}
    assert Usage.objects.filter(run_id=batch.id).count() == 5 and set(rows) == set(names)
    assert (rows["answered-unbilled"].input_tokens, rows["answered-unbilled"].output_tokens) == (3, 4)  # not re-run
    assert rows["answered-billed"].input_tokens == 5
    assert (rows["ran-twice"].status, rows["ran-twice"].error_code) == ("error", "batch_worker_lost")
    assert rows["ran-once"].status == rows["never-ran"].status == "ok"
    assert BatchRequest.objects.get(id=items["ran-once"].id).attempts == 2
    output = {line["custom_id"]: line["response"] for line in results(sdk, done.output_file_id)}
    assert output["answered-unbilled"]["body"] == saved_answer  # the saved answer, as it was
    errors = {line["custom_id"]: line["response"] for line in results(sdk, done.error_file_id)}
    assert errors["ran-twice"]["status_code"] == 500
    assert errors["ran-twice"]["body"]["error"]["code"] == "batch_worker_lost"
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 1)


def test_a_stopped_worker_finishes_what_it_holds_and_takes_nothing_new(live, world, test_database_url):
    sdk = client(live, world.red_key)
    world.demo.options = {"latency_ms": 700, "chunk_delay_ms": 0}
    world.demo.save()
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line(f"s{i}", "Hi") for i in range(6)]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    requests = BatchRequest.objects.filter(batch_id=batch.id)
    worker = start_worker(test_database_url, "--concurrency", "2")
    try:
        assert wait_for(lambda: requests.filter(state="running").count() == 2, timeout=30, interval=0.01)
        held = set(requests.filter(state="running").values_list("id", flat=True))
        worker.terminate()  # SIGTERM
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    done = set(requests.filter(state="done").values_list("id", flat=True))
    assert held <= done  # what it held was finished, and billed
    assert not requests.filter(state__in=("running", "answered")).exists()
    assert Usage.objects.filter(run_id=batch.id).count() == len(done) < 6
    assert set(requests.exclude(id__in=done).values_list("state", "attempts")) == {("pending", 0)}


def test_a_dead_workers_request_in_a_cancelled_batch_is_cancelled_not_run(live, world, test_database_url):
    sdk = client(live, world.red_key)
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line("held", "Hi"), chat_line("queued", "Hi")]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    BatchRequest.objects.filter(batch_id=batch.id, custom_id="held").update(
        state="running", claim="dead-worker", attempts=1, lease_until=timezone.now() + timedelta(seconds=1))
    assert sdk.batches.cancel(batch.id).status == "cancelling"  # "held" is in flight, as far as anyone knows
    run_worker_until_idle(test_database_url)  # waits out the lease
    cancelled = wait_for_batch(sdk, batch.id, ("cancelled",))
    assert [line["error"]["code"] for line in results(sdk, cancelled.error_file_id)] == ["batch_cancelled"] * 2
    assert not Usage.objects.filter(run_id=batch.id).exists()
