"""GET /api/v1/runs and /api/v1/runs/{run_id}: requests tagged with a run id
(header or body metadata) grouped into runs, from the Usage ledger, per team."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from api.runs import run_status
from budgets.models import Usage


def chat(live, key: str, persona: str, *, run_id: str, step: str, via: str = "headers") -> httpx.Response:
    body = {"model": persona, "messages": [{"role": "user", "content": f"{step} please"}]}
    headers = {"Authorization": f"Bearer {key}"}
    if via == "headers":
        headers |= {"X-EP-Run-Id": run_id, "X-EP-Step": step}
    else:
        body["metadata"] = {"run_id": run_id, "step": step}
    return httpx.post(live.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def get(live, key: str, path: str, **params) -> httpx.Response:
    return httpx.get(live.url + "/api/v1/runs" + path, params=params, headers={"Authorization": f"Bearer {key}"})


def test_a_run_shows_its_steps_tokens_cost_and_status(live, world):
    for persona, step in (("architect", "design"), ("developer", "build"), ("developer", "build"),
                          ("reviewer", "review")):
        assert chat(live, world.red_key, persona, run_id="run_a", step=step).status_code == 200
    run = get(live, world.red_key, "/run_a").json()
    rows = list(Usage.objects.filter(run_id="run_a"))
    assert (run["run_id"], run["status"], run["request_count"], run["failed_requests"]) == ("run_a", "ok", 4, 0)
    assert run["personas"] == ["architect", "developer", "reviewer"]
    assert Decimal(run["cost_usd"]) == sum(r.cost_usd for r in rows) > 0
    assert run["input_tokens"] == sum(r.input_tokens for r in rows)
    assert run["output_tokens"] == sum(r.output_tokens for r in rows)
    assert run["latency_ms"] == sum(r.latency_ms for r in rows)
    assert [(s["step"], s["personas"], s["requests"]) for s in run["steps"]] == [
        ("design", ["architect"], 1), ("build", ["developer"], 2), ("review", ["reviewer"], 1)]
    build = [r for r in rows if r.step == "build"]
    assert Decimal(run["steps"][1]["cost_usd"]) == sum(r.cost_usd for r in build)
    assert {r["request_id"] for r in run["requests"]} == {r.request_id for r in rows}
    assert run["teams"] == [world.red.id]


def test_body_metadata_tags_a_run_like_the_headers(live, world):
    chat(live, world.red_key, "architect", run_id="run_meta", step="one", via="metadata")
    chat(live, world.red_key, "reviewer", run_id="run_meta", step="two", via="metadata")
    run = get(live, world.red_key, "/run_meta").json()
    assert [s["step"] for s in run["steps"]] == ["one", "two"] and run["request_count"] == 2


def test_the_list_shows_the_latest_runs_first_with_their_totals(live, world):
    chat(live, world.red_key, "architect", run_id="run_old", step="1")
    chat(live, world.red_key, "architect", run_id="run_new", step="1")
    chat(live, world.red_key, "reviewer", run_id="run_new", step="2")
    chat(live, world.red_key, "architect", run_id="", step="")  # untagged: not a run
    runs = get(live, world.red_key, "").json()["data"]
    assert [r["run_id"] for r in runs] == ["run_new", "run_old"]
    assert (runs[0]["personas"], runs[0]["steps"], runs[0]["request_count"]) == (["architect", "reviewer"],
                                                                                ["1", "2"], 2)
    new_rows = Usage.objects.filter(run_id="run_new")
    assert Decimal(runs[0]["cost_usd"]) == sum(r.cost_usd for r in new_rows)
    assert [r["run_id"] for r in get(live, world.red_key, "", limit=1).json()["data"]] == ["run_new"]


def test_a_key_sees_only_its_own_teams_runs_unless_admin(live, world):
    chat(live, world.red_key, "architect", run_id="run_red", step="1")
    chat(live, world.blue_key, "architect", run_id="run_blue", step="1")
    assert [r["run_id"] for r in get(live, world.blue_key, "").json()["data"]] == ["run_blue"]
    hidden = get(live, world.blue_key, "/run_red")
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "run_not_found"
    assert {r["run_id"] for r in get(live, world.admin_key, "").json()["data"]} == {"run_red", "run_blue"}
    assert get(live, world.admin_key, "/run_red").json()["teams"] == [world.red.id]


def test_a_failed_request_shows_in_the_runs_status(live, world):
    chat(live, world.red_key, "architect", run_id="run_recovered", step="1")
    chat(live, world.red_key, "astronaut", run_id="run_recovered", step="2")  # unknown persona: refused
    chat(live, world.red_key, "reviewer", run_id="run_recovered", step="2")
    chat(live, world.red_key, "architect", run_id="run_broken", step="1")
    chat(live, world.red_key, "astronaut", run_id="run_broken", step="2")
    recovered, broken = get(live, world.red_key, "/run_recovered").json(), get(live, world.red_key, "/run_broken").json()
    assert (recovered["status"], recovered["failed_requests"]) == ("partial", 1)
    assert (broken["status"], broken["steps"][1]["status"]) == ("failed", "failed")
    assert [r["error_code"] for r in broken["requests"]] == ["", "model_not_found"]


def test_an_unknown_run_is_a_404_envelope(live, world):
    response = get(live, world.red_key, "/run_nope")
    error = response.json()["error"]
    assert response.status_code == 404
    assert (error["code"], error["type"]) == ("run_not_found", "not_found_error")
    assert "run_nope" in error["message"] and error["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("key, params, status, code", [
    (None, {}, 401, "invalid_api_key"),
    ("ep-not-a-real-key", {}, 401, "invalid_api_key"),
    ("red", {"limit": 0}, 400, "invalid_request"),
    ("red", {"limit": 501}, 400, "invalid_request"),
    ("red", {"since": "yesterday"}, 400, "invalid_request"),
])
def test_the_list_refuses_bad_keys_and_parameters(live, world, key, params, status, code):
    headers = {"Authorization": f"Bearer {world.red_key if key == 'red' else key}"} if key else {}
    response = httpx.get(live.url + "/api/v1/runs", params=params, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("statuses, expected", [
    (["ok", "ok"], "ok"),
    (["ok", "error", "ok"], "partial"),
    (["ok", "refused"], "failed"),
    (["cancelled"], "failed"),
])
def test_run_status_is_the_outcome_of_its_last_request(statuses, expected):
    assert run_status(statuses) == expected


def test_the_runs_endpoints_are_in_the_openapi_schema(live, world):
    paths = httpx.get(live.url + "/api/openapi.json").json()["paths"]
    assert {"/api/v1/runs", "/api/v1/runs/{run_id}"} <= set(paths)
