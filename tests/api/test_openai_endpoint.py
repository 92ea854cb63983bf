"""The OpenAI-compatible endpoint, driven by the official openai SDK against a
live daphne server."""

from __future__ import annotations

import httpx
import openai
import pytest

from budgets.models import Usage


def client(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)


def test_the_openai_sdk_gets_a_completion_from_a_persona(live, world):
    completion = client(live, world.red_key).chat.completions.create(
        model="architect", messages=[{"role": "user", "content": "Design a system"}]
    )
    assert completion.choices[0].message.content.startswith("[demo]")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    row = Usage.objects.get()
    assert (row.persona, row.provider, row.model, row.status) == ("architect", "demo", "demo", "ok")
    assert row.team == world.red
    assert (row.input_tokens, row.output_tokens) == (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert row.cost_usd > 0
    assert row.latency_ms >= 0


def test_the_openai_sdk_streams_deltas_and_final_usage(live, world):
    stream = client(live, world.red_key).chat.completions.create(
        model="persona/developer",
        messages=[{"role": "user", "content": "Write code"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage]
    assert text.startswith("[demo]") and "Write code" in text
    assert finishes == ["stop"]
    assert len(usage) == 1 and usage[0].completion_tokens > 0
    row = Usage.objects.get()
    assert row.stream and row.status == "ok" and row.persona == "developer"
    assert row.output_tokens == usage[0].completion_tokens
    assert row.ttft_ms is not None


def test_responses_say_who_served_them(live, world):
    raw = client(live, world.red_key).chat.completions.with_raw_response.create(
        model="reviewer", messages=[{"role": "user", "content": "Review"}]
    )
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ep-provider"] == "demo"
    assert raw.headers["x-ep-model"] == "demo"
    assert float(raw.headers["x-ep-cost-usd"]) > 0
    assert Usage.objects.get().request_id == raw.headers["x-request-id"]


def test_a_wrong_key_is_an_authentication_error(live, world):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(live, "ep-not-a-real-key").chat.completions.create(
            model="architect", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["code"] == "invalid_api_key"
    assert Usage.objects.count() == 0  # nobody to bill


def test_a_revoked_key_is_refused(live, world):
    from django.utils import timezone

    from accounts.models import ApiKey

    ApiKey.objects.filter(name="red agents").update(revoked_at=timezone.now())
    ApiKey.objects.get(name="red agents").save()  # signals invalidate caches
    with pytest.raises(openai.AuthenticationError):
        client(live, world.red_key).chat.completions.create(model="architect", messages=[{"role": "user", "content": "x"}])


def test_an_unknown_persona_is_a_not_found_error_naming_the_known_ones(live, world):
    with pytest.raises(openai.NotFoundError) as caught:
        client(live, world.red_key).chat.completions.create(
            model="astronaut", messages=[{"role": "user", "content": "hi"}]
        )
    assert "Unknown persona 'astronaut'" in caught.value.message
    assert "architect" in caught.value.message
    row = Usage.objects.get()
    assert (row.status, row.http_status, row.error_code) == ("refused", 404, "model_not_found")


def test_models_lists_the_personas(live, world):
    ids = [m.id for m in client(live, world.red_key).models.list()]
    assert {"architect", "developer", "reviewer"} <= set(ids)
    assert not any("/" in i for i in ids)  # direct models only for keys allowed to use them
    direct_ids = [m.id for m in client(live, world.direct_key).models.list()]
    assert "demo/demo" in direct_ids


def test_a_direct_provider_model_needs_the_direct_scope(live, world):
    with pytest.raises(openai.PermissionDeniedError):
        client(live, world.red_key).chat.completions.create(
            model="demo/demo", messages=[{"role": "user", "content": "hi"}]
        )
    answer = client(live, world.direct_key).chat.completions.create(
        model="demo/demo", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content
    assert list(Usage.objects.order_by("created_at").values_list("status", flat=True)) == ["refused", "ok"]


def test_tools_round_trip_through_the_endpoint(live, world):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    sdk = client(live, world.red_key)
    first = sdk.chat.completions.create(model="architect", tools=tools,
                                        messages=[{"role": "user", "content": "Weather?"}])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    second = sdk.chat.completions.create(model="architect", tools=tools, messages=[
        {"role": "user", "content": "Weather?"},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])
    assert "sunny" in second.choices[0].message.content


# -- bad input: a 4xx envelope, never a 500, and one row each ---------------------------

BAD_BODIES = {
    "malformed json": (b'{"model": "architect", "messages": [', 400, "invalid_json"),
    "missing messages": (b'{"model": "architect"}', 400, "invalid_request"),
    "empty messages": (b'{"model": "architect", "messages": []}', 400, "invalid_request"),
    "wrong types": (b'{"model": 5, "messages": "hello"}', 400, "invalid_request"),
    "bad role": (b'{"model": "architect", "messages": [{"role": "wizard", "content": "x"}]}', 400, "invalid_request"),
    "temperature out of range": (
        b'{"model": "architect", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}', 400,
        "invalid_request"),
    "json array": (b"[1, 2, 3]", 400, "invalid_request"),
    "not utf-8": (b"\xff\xfe\x00garbage", 400, "invalid_json"),
    "huge body": (b'{"model": "architect", "messages": [{"role": "user", "content": "' + b"x" * (9 * 1024 * 1024)
                  + b'"}]}', 413, "request_too_large"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_input_gets_a_4xx_envelope(live, world, case):
    body, status, code = BAD_BODIES[case]
    response = httpx.post(live.url + "/v1/chat/completions", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {world.red_key}", "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    row = Usage.objects.get()
    assert (row.status, row.http_status, row.error_code) == ("refused", status, code)


def test_unknown_api_paths_are_json_404s(live, world):
    response = httpx.get(live.url + "/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_endpoint"


def test_health_reports_the_database_and_providers(live, world):
    body = httpx.get(live.url + "/health").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["providers"]["demo"]["demo"] is True
