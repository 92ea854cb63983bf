"""Batch jobs through the real openai SDK against the live gateway: files.create
+ batches.create, a worker process (`manage.py run_batches`) runs the requests
through the pipeline, the SDK polls and reads the results; cancellation;
requests that fail; validation against the batch's endpoint."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from accounts.models import ApiKey, hash_key
from budgets.models import RateLimit, Usage
from gateway.models import Batch, BatchFile, BatchRequest
from tests.api.batch_support import (
    chat_line,
    client,
    results,
    run_worker_until_idle,
    start_worker,
    upload,
    wait_for_batch,
)
from tests.conftest import stop_process
from tests.fakes.common import FakeReply
from tests.streaming_support import wait_for

pytestmark = pytest.mark.slow


def _slow_demo(world, latency_ms: int) -> None:
    world.demo.options = {"latency_ms": latency_ms, "chunk_delay_ms": 0}
    world.demo.save()


def test_a_batch_runs_through_the_pipeline_and_its_results_come_back(live, world, test_database_url):
    sdk = client(live, world.red_key)
    _slow_demo(world, 150)
    prompts = {f"task-{i}": f"Summarize part {i}" for i in range(6)}
    input_file = upload(sdk, [chat_line(cid, prompt) for cid, prompt in prompts.items()])
    assert (input_file.object, input_file.purpose, input_file.filename) == ("file", "batch", "requests.jsonl")
    batch = sdk.batches.create(input_file_id=input_file.id, endpoint="/v1/chat/completions",
                               completion_window="24h", metadata={"job": "nightly"})
    assert batch.status == "validating" and batch.request_counts.total == 6 and batch.usage.total_tokens == 0
    assert batch.metadata == {"job": "nightly"} and batch.expires_at - batch.created_at == 24 * 3600

    output = run_worker_until_idle(test_database_url, "--concurrency", "2")
    assert "Traceback" not in output and "Unclosed" not in output and '"level": "ERROR"' not in output
    done = wait_for_batch(sdk, batch.id, ("completed",))

    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 6, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    lines = results(sdk, done.output_file_id)
    assert [line["custom_id"] for line in lines] == list(prompts)  # in input order
    rows = {row.request_id: row for row in Usage.objects.filter(run_id=batch.id)}
    assert len(rows) == 6  # one Usage row per request, tagged with the batch
    for line in lines:
        response = line["response"]
        assert response["status_code"] == 200 and line["error"] is None
        assert prompts[line["custom_id"]] in response["body"]["choices"][0]["message"]["content"]
        row = rows[response["request_id"]]
        assert (row.step, row.persona, row.status, row.endpoint) == (line["custom_id"], "architect", "ok",
                                                                     "v1.chat.completions")
        assert row.team == world.red and row.cost_usd > 0
        assert row.output_tokens == response["body"]["usage"]["completion_tokens"]
    assert _most_at_once(rows.values()) == 2  # the concurrency limit, used
    assert done.usage.input_tokens == sum(r.input_tokens for r in rows.values())
    assert done.usage.total_tokens == sum(r.input_tokens + r.output_tokens for r in rows.values())
    assert Decimal(done.usage.cost_usd) == sum(r.cost_usd for r in rows.values())  # ours, beside OpenAI's fields
    assert sdk.files.retrieve(done.output_file_id).purpose == "batch_output"
    run = httpx.get(f"{live.url}/api/v1/runs/{batch.id}", headers={"Authorization": f"Bearer {world.red_key}"}).json()
    assert run["request_count"] == 6 and Decimal(run["cost_usd"]) == sum(r.cost_usd for r in rows.values())
    assert sorted(run["steps"], key=lambda s: s["step"])[0]["step"] == "task-0"


def _most_at_once(rows) -> int:
    """The most requests that were in flight at one moment, from their rows
    (each ran from created_at - latency to created_at)."""
    spans = [(row.created_at - timedelta(milliseconds=row.latency_ms), row.created_at) for row in rows]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_failed_requests_go_to_the_error_file_with_their_own_rows(live, world, test_database_url):
    sdk = client(live, world.red_key)
    lines = [chat_line("good", "Hello"), chat_line("unknown", "Hello", model="no-such-persona"),
             chat_line("over-cap", "Hello", model="demo/demo")]  # a chat key may not call provider/model
    batch = sdk.batches.create(input_file_id=upload(sdk, lines).id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    run_worker_until_idle(test_database_url)
    done = wait_for_batch(sdk, batch.id, ("completed",))
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    assert [line["custom_id"] for line in results(sdk, done.output_file_id)] == ["good"]
    errors = {line["custom_id"]: line["response"] for line in results(sdk, done.error_file_id)}
    assert errors["unknown"]["status_code"] == 404
    assert errors["unknown"]["body"]["error"]["code"] == "model_not_found"
    assert errors["over-cap"]["status_code"] == 403
    rows = Usage.objects.filter(run_id=batch.id)
    assert sorted(rows.values_list("step", "status")) == [("good", "ok"), ("over-cap", "refused"),
                                                          ("unknown", "refused")]


def test_embeddings_run_in_a_batch(live, world, test_database_url):
    line = {"custom_id": "vec", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "demo/demo", "input": ["alpha", "beta"]}}
    direct = client(live, world.direct_key)
    batch = direct.batches.create(input_file_id=upload(direct, [line]).id, endpoint="/v1/embeddings",
                                  completion_window="24h")
    run_worker_until_idle(test_database_url)
    done = wait_for_batch(direct, batch.id, ("completed",))
    [result] = results(direct, done.output_file_id)
    assert result["response"]["status_code"] == 200, result
    assert [item["index"] for item in result["response"]["body"]["data"]] == [0, 1]
    assert len(result["response"]["body"]["data"][0]["embedding"]) > 0
    row = Usage.objects.get(run_id=batch.id)
    assert (row.endpoint, row.step, row.status) == ("v1.embeddings", "vec", "ok")


def test_a_cancelled_batch_stops_and_keeps_what_ran(live, world, test_database_url):
    sdk = client(live, world.red_key)
    _slow_demo(world, 300)
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line(f"c{i}", "Hi") for i in range(8)]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    worker = start_worker(test_database_url, "--concurrency", "1")
    try:
        assert wait_for(lambda: Usage.objects.filter(run_id=batch.id).exists(), timeout=30)
        cancelling = sdk.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
        final = wait_for_batch(sdk, batch.id, ("cancelled",))
    finally:
        stop_process(worker)
    ran = final.request_counts.completed
    assert 1 <= ran < 8 and final.cancelled_at and final.completed_at is None
    assert len(results(sdk, final.output_file_id)) == ran
    not_run = results(sdk, final.error_file_id)
    assert len(not_run) == 8 - ran
    assert {(line["response"], line["error"]["code"]) for line in not_run} == {(None, "batch_cancelled")}
    assert Usage.objects.filter(run_id=batch.id, status="ok").count() == ran  # only what ran was billed


def test_a_batch_cancelled_before_any_worker_ran_it_is_cancelled_at_once(live, world):
    sdk = client(live, world.red_key)
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line("only", "Hi")]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    cancelled = sdk.batches.cancel(batch.id)
    assert cancelled.status == "cancelled" and cancelled.output_file_id is None
    assert [line["error"]["code"] for line in results(sdk, cancelled.error_file_id)] == ["batch_cancelled"]
    assert sdk.batches.cancel(batch.id).status == "cancelled"  # a finished batch stays as it is
    assert not Usage.objects.filter(run_id=batch.id).exists()
    assert BatchRequest.objects.get(batch_id=batch.id).state == "cancelled"


def test_batches_are_listed_newest_first_with_a_cursor(live, world):
    sdk = client(live, world.red_key)
    file_id = upload(sdk, [chat_line("x", "Hi")]).id
    ids = [sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="24h").id for _ in range(3)]
    first_page = sdk.batches.list(limit=2)
    assert [b.id for b in first_page.data] == ids[::-1][:2] and first_page.has_more
    assert [b.id for b in sdk.batches.list(limit=2, after=ids[1]).data] == [ids[0]]
    assert [b.id for b in sdk.batches.list(limit=2)] == ids[::-1]  # the SDK pages through with `after`


def test_requests_not_run_within_the_window_expire(live, world, test_database_url):
    sdk = client(live, world.red_key)
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line("late", "Hi")]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    Batch.objects.filter(id=batch.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    run_worker_until_idle(test_database_url)
    expired = wait_for_batch(sdk, batch.id, ("expired",))
    assert expired.expired_at and expired.output_file_id is None
    assert [line["error"]["code"] for line in results(sdk, expired.error_file_id)] == ["batch_expired"]
    assert not Usage.objects.filter(run_id=batch.id).exists()


def test_a_rate_limited_batch_waits_instead_of_failing(live, world, test_database_url):
    limited, key = ApiKey.issue(team=world.red, name=f"limited {uuid.uuid4().hex[:6]}")
    RateLimit.objects.create(api_key=limited, requests_per_minute=2)
    sdk = client(live, key)
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line(f"r{i}", "Hi") for i in range(3)]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    rows = Usage.objects.filter(run_id=batch.id)
    worker = start_worker(test_database_url, "--concurrency", "1")
    try:
        assert wait_for(lambda: rows.count() == 2, timeout=30)
        assert wait_for(lambda: "rate-limited" in worker.log_path.read_text(), timeout=10)
        third = BatchRequest.objects.get(batch_id=batch.id, custom_id="r2")
        assert (third.state, third.attempts) == ("pending", 0)  # put back, to run when the limit allows
        assert rows.count() == 2 and set(rows.values_list("status", flat=True)) == {"ok"}
        assert sdk.batches.retrieve(batch.id).status == "in_progress"
    finally:
        stop_process(worker)


def test_a_batch_whose_key_was_revoked_runs_nothing(live, world, test_database_url):
    sdk = client(live, world.red_key)
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line("a", "Hi"), chat_line("b", "Hi")]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    ApiKey.objects.filter(key_hash=hash_key(world.red_key)).update(revoked_at=timezone.now())
    run_worker_until_idle(test_database_url)
    done = Batch.objects.get(id=batch.id)
    assert done.status == "completed" and not done.output_file_id
    lines = [json.loads(line) for line in BatchFile.objects.get(id=done.error_file_id).content.splitlines()]
    assert {(line["response"]["status_code"], line["response"]["body"]["error"]["code"]) for line in lines} == {
        (401, "invalid_api_key")}
    rows = Usage.objects.filter(run_id=batch.id)
    assert sorted(rows.values_list("step", "status", "cost_usd")) == [("a", "refused", 0), ("b", "refused", 0)]


def test_a_batch_reaches_a_real_provider_adapter_and_is_priced_from_its_usage(live, world, via_fake,
                                                                             test_database_url):
    via_fake.script(FakeReply(text="first answer", input_tokens=100, output_tokens=10, cached_tokens=40),
                    FakeReply(text="second answer", input_tokens=200, output_tokens=20))
    sdk = client(live, world.red_key)
    lines = [chat_line("one", "Q1", model="via-openai", temperature=0.2),
             chat_line("two", "Q2", model="via-openai", max_tokens=50)]
    batch = sdk.batches.create(input_file_id=upload(sdk, lines).id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    run_worker_until_idle(test_database_url, "--concurrency", "1")
    done = wait_for_batch(sdk, batch.id, ("completed",))
    answers = {line["custom_id"]: line["response"]["body"] for line in results(sdk, done.output_file_id)}
    assert answers["one"]["choices"][0]["message"]["content"] == "first answer"
    assert answers["one"]["usage"]["prompt_tokens_details"]["cached_tokens"] == 40
    assert answers["two"]["choices"][0]["message"]["content"] == "second answer"
    sent = [request["body"] for request in via_fake.requests]
    assert [(b["messages"][-1]["content"], b.get("temperature")) for b in sent] == [("Q1", 0.2), ("Q2", None)]
    assert sent[1]["max_tokens"] == 50  # each line's own parameters reach the provider
    rows = {row.step: row for row in Usage.objects.filter(run_id=batch.id)}
    assert (rows["one"].provider, rows["one"].input_tokens, rows["one"].cached_tokens) == ("openai", 100, 40)
    assert rows["two"].cost_usd > rows["one"].cost_usd > 0
