"""GET /costs: totals and a daily series, grouped by team, persona, provider,
model, key or workflow run, over a time range; JSON or CSV.

A key sees its own team's costs; an admin-scoped key sees every team.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, time, timedelta
from typing import Literal

from asgiref.sync import sync_to_async
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from ninja import Router

from api.auth import ApiKeyAuth
from api.errors import KEYED, error_responses
from api.responses import json_response
from budgets.exports import csv_writer
from budgets.rollups import totals
from budgets.selectors import spend_by, spend_over
from gateway.errors import InvalidRequest

router = Router(tags=["Costs"], auth=ApiKeyAuth())
GroupBy = Literal["team", "persona", "provider", "model", "key", "run"]
# A month of a busy ledger holds tens of thousands of workflow runs: by run,
# /costs answers the costliest RUN_LIMIT unless `limit` asks for more.
RUN_LIMIT = 100
MAX_LIMIT = 10_000


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


def _series(daily: dict[tuple, dict]) -> list[dict]:
    return [{"day": day.isoformat(), "group": label, "cost_usd": f"{sums['cost'] or 0:.8f}",
             "requests": sums["requests"]} for (day, label), sums in sorted(daily.items())]


def _run_series(run_ids: list[str], *, team_ids: set[int] | None, since: datetime,
                until: datetime | None) -> dict[tuple, dict]:
    """The daily series of the runs listed (the costliest `limit`), not of every run."""
    found = totals(by=("day", "run_id"), sums=("cost", "requests"), team_ids=team_ids, since=since, until=until,
                   runs=True, where=Q(run_id__in=run_ids))
    return {(day, run_id or "(none)"): sums for (day, run_id), sums in found.items()}


def _limit(value: int | None, group_by: str) -> int | None:
    if value is None:
        return RUN_LIMIT if group_by == "run" else None
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT:,}.", param="limit")
    return value


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
                format: Literal["json", "csv"] = "json", limit: int | None = None):
    """Model calls' spend over [start, end) (default: the last 30 days): totals,
    the biggest `limit` groups (1 to 10,000; every group by default, but by run
    the costliest 100) and the daily series of those; `has_more` says whether
    groups were left out. Totals are the whole range's either way."""
    # ApiKeyAuth is async, so the operation must be too; the queries run in a thread.
    return await sync_to_async(_costs, thread_sensitive=False)(request, group_by, start, end, format, limit)


def _costs(request: HttpRequest, group_by: str, start: str | None, end: str | None, format: str,
           limit: int | None) -> HttpResponse:
    """The groups (the biggest `limit`, all by default but for runs), the totals
    and each listed group's daily series. One read of the rollups by day and the
    group serves all three; runs come from their own rollup, the totals then
    from the cube."""
    key = request.auth
    team_ids = None if key.has_scope("admin") else {key.team_id}
    since = _moment(start, param="start") or timezone.now() - timedelta(days=30)
    until = _moment(end, param="end", end=True)
    limit = _limit(limit, group_by)
    if group_by == "run":
        spend = spend_over(team_ids=team_ids, since=since, until=until)
        by_group = spend_by(dimension="run", team_ids=team_ids, since=since, until=until, limit=limit + 1)
        has_more, by_group = len(by_group) > limit, by_group[:limit]
    else:
        spend = spend_over(team_ids=team_ids, since=since, until=until, daily=group_by)
        by_group = spend.by(group_by)
        has_more, by_group = limit is not None and len(by_group) > limit, by_group[:limit]
    # Runs are summed from their own rollup, which keeps no savings: those groups leave them out.
    groups = [{"group": g["label"], "cost_usd": f"{g['cost'] or 0:.8f}", "requests": g["requests"],
               "tokens": g["tokens"]} | ({"saved_usd": f"{g['saved']:.8f}", "cache_hits": g["hits"]} if "saved" in g else {})
              for g in by_group]
    if format == "csv":
        return _csv(groups, group_by)
    listed = {g["group"] for g in groups}
    daily = (_run_series([g["label"] if g["label"] != "(none)" else "" for g in by_group], team_ids=team_ids,
                         since=since, until=until) if group_by == "run" else spend.daily(group_by))
    saving = spend.savings()
    body = {"group_by": group_by, "start": since.isoformat(), "end": until.isoformat() if until else None,
            "total_cost_usd": f"{spend.total():.8f}",
            "requests": sum(cell["requests"] for cell in spend.cells.values()),
            "saved_usd": f"{saving['saved']:.8f}", "cache_hits": saving["hits"], "groups": groups,
            "has_more": has_more,
            "daily": _series({k: v for k, v in daily.items() if k[1] in listed})}
    return json_response(body, request.ep_call.request_id)
