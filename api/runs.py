"""Workflow runs: the requests one Hive workflow tagged with the same run id
(X-EP-Run-Id / metadata.run_id) and a step each (X-EP-Step / metadata.step).

A run is not a table: it is an aggregation over the Usage ledger by run_id,
so it can never disagree with what was billed. GET /api/v1/runs lists them,
GET /api/v1/runs/{run_id} shows one step by step (there `steps` are objects
with each step's totals, `requests` lists every request, and `tool_calls`
every tool call of the run: the server-side tool loop's and /mcp's). A key sees its own team's
runs; a key with the `admin` scope sees every team's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db.models import Count, Max, Min, Q, Sum
from django.http import HttpRequest
from ninja import Query, Router

from accounts.snapshot import KeyInfo
from api.auth import ApiKeyAuth
from api.errors import KEYED, error_responses
from api.responses import json_response
from budgets.models import Usage
from gateway.errors import InvalidRequest, NotFound
from gateway.routes import caller_names_check
from tools.models import ToolCallLog

router = Router(tags=["Runs"], auth=ApiKeyAuth())

CENT_DIGITS = Decimal("0.00000001")  # Usage.cost_usd keeps 8 decimal places
TOOL_CALL_FIELDS = ("at", "request_id", "persona", "source", "server", "tool", "status", "error_code",
                    "duration_ms", "bytes_in", "bytes_out")
ROW_FIELDS = ("request_id", "created_at", "team_id", "persona", "provider", "model", "step", "status",
              "error_code", "input_tokens", "output_tokens", "cost_usd", "latency_ms")


def _money(value: Decimal | None) -> str:
    # A string, not a JSON float: summed costs must add up to the cent (and below).
    return str((value or Decimal(0)).quantize(CENT_DIGITS))


def run_status(statuses: list[str]) -> str:
    """ok: every request answered; partial: some failed but the last one was
    answered (the workflow went on); failed: its last request did not succeed."""
    if all(s == "ok" for s in statuses):
        return "ok"
    return "partial" if statuses and statuses[-1] == "ok" else "failed"


def _distinct(values) -> list[str]:
    return [v for v in dict.fromkeys(values) if v]  # first-appearance order


def _ledger(team_id: int | None):
    rows = Usage.objects.exclude(run_id="")
    return rows if team_id is None else rows.filter(team_id=team_id)


# -- selectors -----------------------------------------------------------------------------


def run_summaries(*, team_id: int | None, limit: int = 50, since: datetime | None = None) -> list[dict]:
    """The most recently active runs; team_id None means every team's."""
    rows = _ledger(team_id)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    groups = list(
        rows.values("run_id").annotate(
            requests=Count("id"), failed_requests=Count("id", filter=~Q(status="ok")),
            input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost_usd=Sum("cost_usd"),
            latency_ms=Sum("latency_ms"), started_at=Min("created_at"), ended_at=Max("created_at"),
        ).order_by("-ended_at", "run_id")[:limit]
    )
    members = _members(rows.filter(run_id__in=[g["run_id"] for g in groups]))
    return [_summary(group, *members[group["run_id"]]) for group in groups]


def _members(rows) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """run_id -> (personas, steps, statuses), each in request order."""
    found: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for run_id, persona, step, status in rows.order_by("created_at", "id").values_list(
            "run_id", "persona", "step", "status"):
        personas, steps, statuses = found.setdefault(run_id, ([], [], []))
        personas.append(persona)
        steps.append(step)
        statuses.append(status)
    return found


def _summary(group: dict, personas: list[str], steps: list[str], statuses: list[str]) -> dict:
    return {
        "run_id": group["run_id"],
        "status": run_status(statuses),
        "personas": _distinct(personas),
        "steps": _distinct(steps),
        "request_count": group["requests"],
        "failed_requests": group["failed_requests"],
        "input_tokens": group["input_tokens"] or 0,
        "output_tokens": group["output_tokens"] or 0,
        "cost_usd": _money(group["cost_usd"]),
        "latency_ms": group["latency_ms"] or 0,
        "started_at": group["started_at"].isoformat(),
        "ended_at": group["ended_at"].isoformat(),
    }


def run_detail(*, run_id: str, team_id: int | None) -> dict | None:
    """One run with its steps (in order of first request) and every request; None if unknown."""
    rows = list(_ledger(team_id).filter(run_id=run_id).order_by("created_at", "id").values(*ROW_FIELDS))
    if not rows:
        return None
    group = {
        "run_id": run_id, "requests": len(rows), "failed_requests": sum(r["status"] != "ok" for r in rows),
        "input_tokens": sum(r["input_tokens"] for r in rows), "output_tokens": sum(r["output_tokens"] for r in rows),
        "cost_usd": sum((r["cost_usd"] for r in rows), Decimal(0)), "latency_ms": sum(r["latency_ms"] for r in rows),
        "started_at": rows[0]["created_at"], "ended_at": rows[-1]["created_at"],
    }
    detail = _summary(group, [r["persona"] for r in rows], [r["step"] for r in rows], [r["status"] for r in rows])
    detail["teams"] = sorted({r["team_id"] for r in rows if r["team_id"] is not None})
    detail["steps"] = _steps(rows)
    detail["requests"] = [_request_json(r) for r in rows]
    detail["tool_calls"] = _tool_calls(run_id, team_id)
    return detail


def _tool_calls(run_id: str, team_id: int | None) -> list[dict]:
    calls = ToolCallLog.objects.filter(run_id=run_id)
    if team_id is not None:
        calls = calls.filter(team_id=team_id)
    return [{**c, "name": f"{c['server']}__{c['tool']}", "at": c["at"].isoformat()}
            for c in calls.order_by("at", "id").values(*TOOL_CALL_FIELDS)]


def _steps(rows: list[dict]) -> list[dict]:
    by_step: dict[str, list[dict]] = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row)
    return [
        {
            "step": step,
            "personas": _distinct(r["persona"] for r in members),
            "status": run_status([r["status"] for r in members]),
            "requests": len(members),
            "input_tokens": sum(r["input_tokens"] for r in members),
            "output_tokens": sum(r["output_tokens"] for r in members),
            "cost_usd": _money(sum((r["cost_usd"] for r in members), Decimal(0))),
            "latency_ms": sum(r["latency_ms"] for r in members),
        }
        for step, members in by_step.items()
    ]


def _request_json(row: dict) -> dict:
    return {**row, "cost_usd": _money(row["cost_usd"]), "created_at": row["created_at"].isoformat()}


# -- endpoints -------------------------------------------------------------------------------


def _team_scope(key: KeyInfo) -> int | None:
    # An admin key sees every team's runs; any other key only its own team's.
    return None if "admin" in key.scopes else key.team_id


def _utc(moment: datetime | None) -> datetime | None:
    """In UTC: PostgreSQL refuses offsets past +-15:59 that Python accepts (found by schemathesis)."""
    if moment is None:
        return None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest("since is out of range.", param="since") from None


@router.get("", summary="Workflow runs, most recently active first", response={200: dict, **error_responses(*KEYED)})
async def list_runs(request: HttpRequest, limit: int = Query(50, ge=1, le=500), since: datetime | None = None):
    since = _utc(since)
    runs = await sync_to_async(run_summaries, thread_sensitive=False)(
        team_id=_team_scope(request.auth), limit=limit, since=since
    )
    return json_response({"object": "list", "data": runs}, request.ep_call.request_id)


@router.get("/{run_id}", summary="One workflow run: its steps, requests, tokens, cost and status",
            response={200: dict, **error_responses(*KEYED, 404)})
async def get_run(request: HttpRequest, run_id: str):
    request.ep_call.endpoint = "runs.get"  # not the path: it holds the id
    caller_names_check(run_id=run_id)  # the rule run ids are made by: no control characters (a NUL fails a query)
    detail = await sync_to_async(run_detail, thread_sensitive=False)(run_id=run_id, team_id=_team_scope(request.auth))
    if detail is None:
        raise NotFound(f"No run '{run_id}' is visible to this API key.", code="run_not_found", param="run_id")
    return json_response(detail, request.ep_call.request_id)
