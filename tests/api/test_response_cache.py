"""The response cache (gateway/response_cache.py), through the official openai SDK
against the live gateway and a fake OpenAI provider that counts its calls: hit
and miss, streamed replay, the X-EP-Cache header, team isolation, and a hit
that never touches a budget. On SQLite the cache is the database; with
REDIS_URL, Redis. Every prompt holds a uuid: Redis outlives test databases."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Membership
from budgets.models import BudgetCounter, Reservation, Usage
from tests.fakes.common import FakeReply
from tests.streaming_support import route_persona_to_fake

FAKE_COST = Decimal(12 * 1 + 8 * 2) / 1_000_000  # the fake's default usage at the persona's table prices


def client(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture
def cached(fake, world):
    """`cached`: a persona routed to the fake with the response cache on."""
    fake.reset()
    persona = route_persona_to_fake(fake, slug="cached")
    persona.cache_enabled, persona.cache_ttl_seconds = True, 600
    persona.save()
    return persona


def ask(live, key: str, prompt: str, **options):
    return client(live, key).chat.completions.with_raw_response.create(
        model="cached", messages=[{"role": "user", "content": prompt}], **({"temperature": 0} | options))


def question() -> str:
    return f"What is the capital of France? ({uuid.uuid4()})"


def test_a_repeated_request_is_answered_from_the_cache_at_no_cost(live, world, fake, cached):
    prompt = question()
    fake.script(FakeReply(text="Paris."))
    first = ask(live, world.red_key, prompt)
    second = ask(live, world.red_key, prompt)

    assert fake.call_count == 1  # the second never reached the provider
    assert (first.headers["x-ep-cache"], second.headers["x-ep-cache"]) == ("miss", "hit")
    answer = second.parse()
    assert answer.choices[0].message.content == first.parse().choices[0].message.content == "Paris."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 12 and answer.usage.completion_tokens == 8
    assert second.headers["x-ep-provider"] == "openai" and Decimal(second.headers["x-ep-cost-usd"]) == 0
    miss, hit = Usage.objects.order_by("created_at", "id")
    assert (miss.cache_hit, miss.cost_usd, miss.attempts) == (False, FAKE_COST, 1)
    assert (hit.cache_hit, hit.cost_usd, hit.saved_usd, hit.attempts) == (True, 0, FAKE_COST, 0)
    assert (hit.request_id, hit.status, hit.provider) == (second.headers["x-request-id"], "ok", "openai")


def test_another_question_or_other_params_are_a_miss(live, world, fake, cached):
    prompt = question()
    ask(live, world.red_key, prompt)
    other_prompt = ask(live, world.red_key, question())
    other_params = ask(live, world.red_key, prompt, max_tokens=50)
    assert (other_prompt.headers["x-ep-cache"], other_params.headers["x-ep-cache"]) == ("miss", "miss")
    assert fake.call_count == 3


def test_a_request_that_samples_is_not_cached_unless_the_operator_allows_it(live, world, fake, cached):
    prompt = question()
    for _ in range(2):
        unset = client(live, world.red_key).chat.completions.with_raw_response.create(
            model="cached", messages=[{"role": "user", "content": prompt}])
        assert unset.headers["x-ep-cache"] == "skip"
    assert fake.call_count == 2

    cached.cache_any_temperature = True
    cached.save()
    warm, hit = (ask(live, world.red_key, prompt, temperature=0.7) for _ in range(2))
    assert (warm.headers["x-ep-cache"], hit.headers["x-ep-cache"]) == ("miss", "hit")
    assert fake.call_count == 3


def test_a_cached_answer_is_replayed_as_a_stream(live, world, fake, cached):
    prompt = question()
    fake.script(FakeReply(text="Paris is the capital of France, on the Seine."))
    ask(live, world.red_key, prompt)

    raw = client(live, world.red_key).chat.completions.with_raw_response.create(
        model="cached", messages=[{"role": "user", "content": prompt}], temperature=0, stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["x-ep-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1  # in pieces, as a live stream comes
    assert "".join(deltas) == "Paris is the capital of France, on the Seine."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert [c.usage.completion_tokens for c in chunks if c.usage] == [8]
    assert fake.call_count == 1
    hit = Usage.objects.get(request_id=raw.headers["x-request-id"])
    assert (hit.stream, hit.cache_hit, hit.cost_usd, hit.saved_usd) == (True, True, 0, FAKE_COST)


def test_a_streamed_answer_is_kept_for_the_next_request(live, world, fake, cached):
    prompt = question()
    fake.script(FakeReply(text="Streamed once."))
    live_stream = client(live, world.red_key).chat.completions.create(
        model="cached", messages=[{"role": "user", "content": prompt}], temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in live_stream if c.choices) == "Streamed once."

    again = ask(live, world.red_key, prompt)
    assert again.headers["x-ep-cache"] == "hit"
    assert again.parse().choices[0].message.content == "Streamed once."
    assert fake.call_count == 1


def test_the_bypass_header_skips_the_cache_and_refresh_replaces_its_answer(live, world, fake, cached):
    prompt = question()
    fake.script(FakeReply(text="Old answer."), FakeReply(text="Bypassed."), FakeReply(text="New answer."))
    ask(live, world.red_key, prompt)

    bypassed = ask(live, world.red_key, prompt, extra_headers={"X-EP-Cache": "bypass"})
    assert bypassed.headers["x-ep-cache"] == "bypass"
    assert bypassed.parse().choices[0].message.content == "Bypassed."
    assert ask(live, world.red_key, prompt).parse().choices[0].message.content == "Old answer."  # not written

    refreshed = ask(live, world.red_key, prompt, extra_headers={"X-EP-Cache": "refresh"})
    assert refreshed.headers["x-ep-cache"] == "refresh"
    assert refreshed.parse().choices[0].message.content == "New answer."
    after = ask(live, world.red_key, prompt)
    assert (after.headers["x-ep-cache"], after.parse().choices[0].message.content) == ("hit", "New answer.")
    assert fake.call_count == 3
    assert Usage.objects.filter(cache_hit=True).count() == 2


def test_an_unknown_cache_header_is_refused_with_its_own_code(live, world, fake, cached):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(live, world.red_key, question(), extra_headers={"X-EP-Cache": "forever"})
    assert caught.value.body["code"] == "invalid_cache_header"
    assert caught.value.body["param"] == "X-EP-Cache"
    assert Usage.objects.get().error_code == "invalid_cache_header"
    assert fake.call_count == 0


def test_one_team_never_gets_another_teams_cached_answer(live, world, fake, cached):
    prompt = question()
    fake.script(FakeReply(text="Red's answer."), FakeReply(text="Blue's answer."))
    ask(live, world.red_key, prompt)
    blue = ask(live, world.blue_key, prompt)
    assert blue.headers["x-ep-cache"] == "miss"
    assert blue.parse().choices[0].message.content == "Blue's answer."
    assert ask(live, world.red_key, prompt).parse().choices[0].message.content == "Red's answer."
    assert fake.call_count == 2


def test_a_shared_cache_serves_every_team(live, world, fake, cached):
    cached.cache_shared = True
    cached.save()
    prompt = question()
    fake.script(FakeReply(text="Shared answer."))
    ask(live, world.red_key, prompt)
    blue = ask(live, world.blue_key, prompt)
    assert (blue.headers["x-ep-cache"], blue.parse().choices[0].message.content) == ("hit", "Shared answer.")
    assert fake.call_count == 1
    assert Usage.objects.get(cache_hit=True).team == world.blue


def test_a_hit_never_touches_a_budget(live, world, fake, cached):
    from budgets.models import Budget

    prompt = question()
    ask(live, world.red_key, prompt)
    Budget.objects.create(name="red tiny", scope="team", team=world.red, period="day", limit_usd="0.000001")

    hit = ask(live, world.red_key, prompt)  # a provider call would be over the budget; the hit costs nothing
    assert hit.headers["x-ep-cache"] == "hit"
    with pytest.raises(openai.RateLimitError) as caught:
        ask(live, world.red_key, question())
    assert caught.value.body["code"] == "budget_exceeded"
    assert Reservation.objects.count() == 0
    # The counter holds what the first answer cost (the ledger's day so far) and nothing the hit did.
    assert [(c.spent, c.reserved) for c in BudgetCounter.objects.all()] == [(FAKE_COST, 0)]
    assert fake.call_count == 1


def test_a_persona_without_the_cache_says_nothing_of_it(live, world, fake, cached):
    cached.cache_enabled = False
    cached.save()
    prompt = question()
    first, second = (ask(live, world.red_key, prompt) for _ in range(2))
    assert "x-ep-cache" not in first.headers and "x-ep-cache" not in second.headers
    assert fake.call_count == 2
    assert not Usage.objects.filter(cache_hit=True).exists()


def _stored_entries() -> int:
    """Response cache entries, in whichever store this run uses."""
    from django.conf import settings

    from budgets import shared_state
    from gateway.models import CachedAnswer

    if settings.REDIS_URL:
        return sum(1 for _ in shared_state.sync_redis().scan_iter("ep:rc:*"))
    return CachedAnswer.objects.count()


def test_a_persona_without_the_cache_never_writes_to_it(live, world, fake, cached):
    cached.cache_enabled = False
    cached.save()
    before = _stored_entries()
    ask(live, world.red_key, question())
    assert _stored_entries() == before


def test_the_anthropic_sdk_gets_a_cached_answer_replayed_as_its_own_stream(live, world, fake, cached):
    import anthropic

    prompt = question()
    fake.script(FakeReply(text="Paris is the capital of France."))
    sdk = anthropic.Anthropic(base_url=live.url, api_key=world.red_key, max_retries=0)
    request = {"model": "cached", "max_tokens": 100, "extra_body": {"temperature": 0},
               "messages": [{"role": "user", "content": prompt}]}
    first = sdk.messages.create(**request)
    with sdk.messages.stream(**request) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 1 and "".join(texts) == first.content[0].text == "Paris is the capital of France."
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 8)
    assert fake.call_count == 1
    assert Usage.objects.get(stream=True).cache_hit


@pytest.mark.asyncio
async def test_the_websocket_is_answered_from_the_cache_and_can_bypass_it(live, world, fake, cached):
    from tests.streaming_support import chat_frame, frames_until_terminal, open_socket

    prompt = question()
    async with open_socket(live, key=world.red_key) as ws:
        done = {}
        for request_id, extra in (("warm", {}), ("again", {}), ("fresh", {"cache": "bypass"})):
            await ws.send(chat_frame(request_id, "cached", prompt, temperature=0, **extra))
            frames = await frames_until_terminal(ws, {request_id})
            done[request_id] = frames[-1]
    assert [done[i]["cache"] for i in ("warm", "again", "fresh")] == ["miss", "hit", "bypass"]
    assert done["again"]["usage"]["cost_usd"] == "0"
    assert fake.call_count == 2


def test_the_openapi_docs_name_the_cache_header(live):
    import httpx

    schema = httpx.get(live.url + "/api/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/messages", "/api/v1/chat", "/v1/responses"):
        operation = schema["paths"][path]["post"]
        assert {"in": "header", "name": "X-EP-Cache"}.items() <= operation["parameters"][0].items()
        assert "X-EP-Cache" in operation["responses"]["200"]["headers"]


def test_a_hit_is_a_request_to_the_rate_limits_but_adds_no_tokens(live, world, fake, cached):
    from budgets.models import RateLimit

    RateLimit.objects.create(team=world.red, requests_per_minute=3, tokens_per_minute=25)
    prompt = question()
    ask(live, world.red_key, prompt)  # 20 tokens from the provider
    hit = ask(live, world.red_key, prompt)
    assert hit.headers["x-ep-cache"] == "hit"
    assert ask(live, world.red_key, prompt).headers["x-ep-cache"] == "hit"  # the hits added no tokens: 20 < 25
    with pytest.raises(openai.RateLimitError) as caught:  # but each was a request: 3 of 3
        ask(live, world.red_key, prompt)
    assert caught.value.body["code"] == "rate_limit_exceeded"
    refused = Usage.objects.get(status="refused")
    assert (refused.cache_hit, refused.saved_usd) == (False, 0)  # a refusal saved nothing
    assert fake.call_count == 1


def test_an_unreachable_cache_store_never_refuses_a_request(live, world, fake, cached, test_database_url, tmp_path):
    from tests.conftest import _free_port, start_daphne, stop_process

    # A gateway whose Redis is down from the start: every lookup and write fails.
    server = start_daphne(test_database_url, name="gateway-cache-down", REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0",
                          EP_SPOOL_DIR=str(tmp_path / "spool"))
    try:
        prompt = question()
        fake.script(FakeReply(text="First."), FakeReply(text="Second."))
        answers = [client(server, world.blue_key).chat.completions.with_raw_response.create(
            model="cached", messages=[{"role": "user", "content": prompt}], temperature=0) for _ in range(2)]
    finally:
        stop_process(server.process)
    assert [a.headers["x-ep-cache"] for a in answers] == ["miss", "miss"]
    assert [a.parse().choices[0].message.content for a in answers] == ["First.", "Second."]
    assert "response cache unreadable" in server.log_text() and "response cache not written" in server.log_text()
    assert fake.call_count == 2


def test_a_cached_answer_expires_after_the_personas_lifetime(live, world, fake, cached):
    import time

    cached.cache_ttl_seconds = 1
    cached.save()
    prompt = question()
    fake.script(FakeReply(text="Fresh."), FakeReply(text="Fresher."))
    ask(live, world.red_key, prompt)
    assert ask(live, world.red_key, prompt).headers["x-ep-cache"] == "hit"
    time.sleep(1.5)
    expired = ask(live, world.red_key, prompt)
    assert (expired.headers["x-ep-cache"], expired.parse().choices[0].message.content) == ("miss", "Fresher.")
    assert fake.call_count == 2


def test_what_the_cache_saved_reaches_the_costs_api_and_both_csv_exports(live, world, fake, cached):
    prompt = question()
    fake.script(FakeReply(text="Paris."))
    ask(live, world.red_key, prompt)
    hit = ask(live, world.red_key, prompt)
    headers = {"Authorization": f"Bearer {world.red_key}"}
    body = httpx.get(live.url + "/costs", params={"group_by": "persona"}, headers=headers).json()
    assert (Decimal(body["saved_usd"]), body["cache_hits"]) == (FAKE_COST, 1)
    [group] = [g for g in body["groups"] if g["group"] == "cached"]
    assert (Decimal(group["saved_usd"]), group["cache_hits"], group["requests"]) == (FAKE_COST, 1, 2)
    exported = httpx.get(live.url + "/costs", params={"group_by": "persona", "format": "csv"}, headers=headers)
    rows = {r["persona"]: r for r in csv.DictReader(io.StringIO(exported.text))}
    assert (Decimal(rows["cached"]["saved_usd"]), rows["cached"]["cache_hits"]) == (FAKE_COST, "1")

    lead = User.objects.create(username="lead")
    Membership.objects.create(user=lead, team=world.red, role="lead")
    browser = Client()
    browser.force_login(lead)
    streamed = b"".join(browser.get("/dashboard/costs/?format=csv")).decode()
    by_request = {r["request_id"]: r for r in csv.DictReader(io.StringIO(streamed))}
    row = by_request[hit.headers["x-request-id"]]
    assert (row["cache_hit"], Decimal(row["saved_usd"]), Decimal(row["cost_usd"])) == ("1", FAKE_COST, 0)
