"""GET /costs: totals and a daily series, grouped by team, persona, provider,
model, key or workflow run, over a time range; JSON or CSV.

A key sees its own team's costs; an admin-scoped key sees every team.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, time, timedelta
from typing import Literal

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from ninja import Router

from api.auth import ApiKeyAuth
from api.errors import KEYED, error_responses
from api.responses import json_response
from budgets.exports import csv_writer
from budgets.rollups import totals
from budgets.selectors import DIMENSIONS, labels_of, spend_by, spend_over
from gateway.errors import InvalidRequest

router = Router(tags=["Costs"], auth=ApiKeyAuth())
GroupBy = Literal["team", "persona", "provider", "model", "key", "run"]


def _moment(value: str | None, *, param: str, end: bool = False) -> datetime | None:
    if not value:
        return None
    refusal = InvalidRequest(f"{param} must be an ISO date or datetime, e.g. 2026-11-01.", param=param)
    try:
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)) is not None:
            # A bare end date includes that whole day.
            moment = datetime.combine(day + timedelta(days=1) if end else day, time.min)
        if moment is None:
            raise refusal
        # In UTC: PostgreSQL refuses offsets past +-15:59 that Python accepts (found by schemathesis).
        return moment.replace(tzinfo=UTC) if timezone.is_naive(moment) else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # a well-formed but impossible date, or one past year 9999
        raise refusal from None


def _series(group_by: str, *, team_ids: set[int] | None, since: datetime, until: datetime | None) -> list[dict]:
    found = totals(by=("day", DIMENSIONS[group_by]), sums=("cost", "requests"), team_ids=team_ids, since=since,
                   until=until, runs=group_by == "run")
    labels = labels_of(group_by, {value for _, value in found})
    daily: dict[tuple, dict] = {}
    for (day, value), sums in found.items():
        entry = daily.setdefault((day, labels[value]), {"cost": 0, "requests": 0})
        entry["cost"] += sums["cost"]
        entry["requests"] += sums["requests"]
    return [{"day": day.isoformat(), "group": label, "cost_usd": f"{entry['cost']:.8f}",
             "requests": entry["requests"]} for (day, label), entry in sorted(daily.items())]


def _csv(groups: list[dict], group_by: str) -> HttpResponse:
    out = io.StringIO()
    writer = csv_writer(out)  # cells a spreadsheet would run as formulas are neutralised
    savings = group_by != "run"  # runs come from their own rollup, which keeps no savings
    writer.writerow([group_by, "cost_usd", "requests", "tokens"] + (["saved_usd", "cache_hits"] if savings else []))
    for g in groups:
        writer.writerow([g["group"], g["cost_usd"], g["requests"], g["tokens"]]
                        + ([g["saved_usd"], g["cache_hits"]] if savings else []))
    response = HttpResponse(out.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="costs-by-{group_by}.csv"'
    return response


@router.get("/costs", summary="Spend grouped by team, persona, provider, model, key or run",
            response={200: dict, **error_responses(*KEYED)},
            openapi_extra={"responses": {200: {"description": "JSON, or CSV with format=csv.",
                                               "content": {"text/csv": {"schema": {"type": "string"}}}}}})
async def costs(request: HttpRequest, group_by: GroupBy = "team", start: str | None = None, end: str | None = None,
                format: Literal["json", "csv"] = "json"):
    # ApiKeyAuth is async, so the operation must be too; the queries run in a thread.
    return await sync_to_async(_costs, thread_sensitive=False)(request, group_by, start, end, format)


def _costs(request: HttpRequest, group_by: str, start: str | None, end: str | None, format: str) -> HttpResponse:
    key = request.auth
    team_ids = None if key.has_scope("admin") else {key.team_id}
    since = _moment(start, param="start") or timezone.now() - timedelta(days=30)
    until = _moment(end, param="end", end=True)
    spend = spend_over(team_ids=team_ids, since=since, until=until)
    by_group = spend.by(group_by) if group_by != "run" else spend_by(
        dimension="run", team_ids=team_ids, since=since, until=until)
    # Runs are summed from their own rollup, which keeps no savings: those groups leave them out.
    groups = [{"group": g["label"], "cost_usd": f"{g['cost'] or 0:.8f}", "requests": g["requests"],
               "tokens": g["tokens"]} | ({"saved_usd": f"{g['saved']:.8f}", "cache_hits": g["hits"]} if "saved" in g else {})
              for g in by_group]
    if format == "csv":
        return _csv(groups, group_by)
    total = {"cost": spend.total(), "requests": sum(cell["requests"] for cell in spend.cells.values())}
    saving = spend.savings()
    body = {"group_by": group_by, "start": since.isoformat(), "end": until.isoformat() if until else None,
            "total_cost_usd": f"{total['cost']:.8f}", "requests": total["requests"],
            "saved_usd": f"{saving['saved']:.8f}", "cache_hits": saving["hits"], "groups": groups,
            "daily": _series(group_by, team_ids=team_ids, since=since, until=until)}
    return json_response(body, request.ep_call.request_id)
