"""POST /api/v1/chat, JSON and SSE, against a live daphne server."""

from __future__ import annotations

import json
import time

import httpx

from budgets.models import Usage
from tests.fakes.common import FakeReply
from tests.streaming_support import bearer, wait_for


def body(persona: str = "architect", prompt: str = "Design a queue", **extra) -> dict:
    return {"persona": persona, "messages": [{"role": "user", "content": prompt}], **extra}


def sse_events(lines) -> list[tuple[str, dict]]:
    """(event name, data) pairs from an SSE line iterator."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: "):])))
    return events


def test_it_answers_in_json_with_who_served_it_and_the_cost(live, world):
    response = httpx.post(live.url + "/api/v1/chat", headers=bearer(world.red_key),
                          json=body(metadata={"run_id": "run-7", "step": "plan"}))
    assert response.status_code == 200
    answer = response.json()
    assert answer["content"].startswith("[demo]") and answer["finish_reason"] == "stop"
    assert (answer["persona"], answer["provider"], answer["model"]) == ("architect", "demo", "demo")
    assert answer["usage"]["output_tokens"] > 0 and float(answer["usage"]["cost_usd"]) > 0
    row = Usage.objects.get()
    assert (row.request_id, row.endpoint, row.stream) == (response.headers["x-request-id"], "api.v1.chat", False)
    assert (row.run_id, row.step, row.status) == ("run-7", "plan", "ok")


def test_it_streams_the_websocket_events_over_sse(live, world):
    with httpx.stream("POST", live.url + "/api/v1/chat", headers=bearer(world.red_key),
                      json=body(stream=True)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    names = [name for name, _ in events]
    assert names[0] == "delta" and names[-2:] == ["usage", "done"]
    assert all(name == data["type"] for name, data in events)
    reference = httpx.post(live.url + "/api/v1/chat", headers=bearer(world.red_key), json=body()).json()
    assert "".join(d["text"] for n, d in events if n == "delta") == reference["content"]
    done = events[-1][1]
    assert done["request_id"] == response.headers["x-request-id"] and done["finish_reason"] == "stop"
    row = Usage.objects.get(request_id=done["request_id"])  # recorded before `done` was sent
    assert row.stream and row.status == "ok" and str(row.cost_usd.normalize()) == str(
        type(row.cost_usd)(done["usage"]["cost_usd"]).normalize())


def test_refusals_are_json_envelopes_with_one_refused_row_each(live, world):
    cases = {
        "no key": ({}, {"json": body()}, 401, "invalid_api_key"),
        "unknown persona": (bearer(world.red_key), {"json": body(persona="astronaut", stream=True)}, 404,
                            "model_not_found"),
        "missing messages": (bearer(world.red_key), {"json": {"persona": "architect"}}, 400, "invalid_request"),
        "not json": (bearer(world.red_key), {"content": b'{"persona": '}, 400, "invalid_json"),
    }
    for case, (headers, kwargs, status, code) in cases.items():
        response = httpx.post(live.url + "/api/v1/chat", headers=headers, **kwargs)
        assert (case, response.status_code, response.json()["error"]["code"]) == (case, status, code)
    # nobody to bill for the missing key; one refused row for each of the others
    assert sorted(Usage.objects.values_list("error_code", flat=True)) == sorted(
        ["model_not_found", "invalid_request", "invalid_json"])


def test_a_client_that_goes_away_stops_the_provider_and_settles_the_row(live, world, via_fake):
    via_fake.script(FakeReply(text="word " * 400, chunk_size=5, chunk_delay=0.05, output_tokens=400))
    with httpx.stream("POST", live.url + "/api/v1/chat", headers=bearer(world.red_key),
                      json=body("via-openai", stream=True)) as response:
        lines = response.iter_lines()
        deltas = [next(lines) for _ in range(6)]
    left_at = time.monotonic()
    assert any(line == "event: delta" for line in deltas)
    assert wait_for(lambda: via_fake.streams and via_fake.streams[0]["closed"], 3)
    assert time.monotonic() - left_at < 1.0 and not via_fake.streams[0]["completed"]
    row = wait_for(lambda: Usage.objects.first(), 3)
    assert (row.status, row.http_status, row.error_code) == ("cancelled", 499, "client_disconnected")
    assert row.output_tokens > 0 and row.cost_usd > 0


def test_the_endpoint_is_documented_in_openapi_with_its_event_stream(live, world):
    spec = httpx.get(live.url + "/api/openapi.json").json()
    operation = spec["paths"]["/api/v1/chat"]["post"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    schema_name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"persona", "messages", "tools", "stream", "metadata"} <= set(spec["components"]["schemas"][schema_name][
        "properties"])
