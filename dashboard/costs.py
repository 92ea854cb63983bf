"""Dashboard pages for money: costs (charts, breakdowns, CSV) and the usage log.

Every query goes through budgets.selectors with the user's visible teams, so a
team lead's numbers are their teams' alone; naming another team is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from asgiref.sync import sync_to_async
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from accounts.models import Team
from accounts.roles import costs_required, visible_team_ids
from budgets import rollups, selectors, trends
from budgets.exports import Lines, csv_writer
from dashboard import charts
from dashboard.forms import UsageFilterForm
from dashboard.rendering import render_page
from tools.timeline import run_timeline

PERIODS = (7, 30, 90)
STACKS = ("persona", "team", "provider", "model")  # what the spend-over-time chart can be stacked by
BREAKDOWNS = [("team", "Team"), ("persona", "Persona"), ("provider", "Provider"), ("model", "Model"),
              ("run", "Workflow run")]
SAVINGS_BY = [("team", "Team"), ("persona", "Persona")]


def _scope(request: HttpRequest) -> tuple[set[int] | None, Team | None]:
    """The teams this page adds up: all visible ones, or the one asked for."""
    visible = visible_team_ids(request.user)
    team_id = request.GET.get("team", "")
    if not team_id:
        return visible, None
    if not team_id.isdigit() or (visible is not None and int(team_id) not in visible):
        raise Http404("No such team.")
    team = get_object_or_404(Team, pk=int(team_id))
    return {team.pk}, team


def _teams_for_filter(request: HttpRequest):
    visible = visible_team_ids(request.user)
    teams = Team.objects.order_by("name")
    return teams if visible is None else teams.filter(pk__in=visible)


@costs_required
@require_GET
def costs(request: HttpRequest) -> HttpResponse:
    team_ids, team = _scope(request)
    days = int(request.GET.get("days", 30)) if request.GET.get("days", "30") in map(str, PERIODS) else 30
    since = selectors.day_start() - timedelta(days=days - 1)
    if request.GET.get("format") == "csv":
        return _csv(team_ids, since, days)
    stack = request.GET.get("stack") if request.GET.get("stack") in STACKS else "persona"
    with rollups.ledger_reads_shared():  # today's rows read once for the breakdowns and the chart
        spend = selectors.spend_over(team_ids=team_ids, since=since)  # every breakdown but runs from one read
        context = {
            "team": team, "teams": _teams_for_filter(request), "days": days, "periods": PERIODS,
            "stack": stack, "stacks": STACKS,
            **_spend_over_time(team_ids, team, days=days, since=since, stack=stack),
            "breakdowns": [(dim, label, spend.by(dim, limit=10) if dim != "run" else
                            selectors.spend_by(dimension=dim, team_ids=team_ids, since=since, limit=10))
                           for dim, label in BREAKDOWNS],
            "top_keys": spend.by("key", limit=10),
            "savings": spend.savings(),
            "savings_by": [(label, spend.savings(dim)) for dim, label in SAVINGS_BY],
        }
    return render_page(request, "budgets/costs.html", context)


def _spend_over_time(team_ids: set[int] | None, team: Team | None, *, days: int, since: datetime,
                     stack: str) -> dict:
    """The stacked chart, and the same numbers for the `days` before, for comparison."""
    stacked = trends.spend_stacked(dimension=stack, team_ids=team_ids, days=days)
    before = since - timedelta(days=days)
    previous = selectors.cost_by(dimension=stack, team_ids=team_ids, since=before, until=since)
    previous_total = sum(previous.values(), selectors.ZERO)
    shown = {label for label, _ in stacked.series}
    previous[trends.OTHER] = previous_total - sum((c for label, c in previous.items() if label in shown),
                                                  selectors.ZERO)
    what = f"Spend of team '{team.name}' by {stack}" if team else f"Spend by {stack}"
    total = stacked.total()
    change = (f"{(total - previous_total) * 100 / previous_total:+.0f}%" if previous_total else None)
    return {"chart": charts.stacked_chart(stacked.days, stacked.series, what=what, previous=previous),
            "total": total, "previous_total": previous_total, "change": change}


@costs_required
@require_GET
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    """One workflow run's cost by persona and by step, and its timeline of model calls and
    tool calls (team leads: their teams' rows only)."""
    team_ids = visible_team_ids(request.user)
    parts = trends.run_parts(run_id=run_id, team_ids=team_ids)
    timeline, timeline_total = run_timeline(run_id=run_id, team_ids=team_ids)
    if not parts and not timeline:
        raise Http404("No such run.")
    total = sum((p.cost for p in parts), selectors.ZERO)
    by_persona: dict[str, list] = {}
    for p in parts:
        entry = by_persona.setdefault(p.persona, [p.persona, selectors.ZERO, 0])
        entry[1] += p.cost
        entry[2] += p.requests
    personas = [{"persona": name, "cost": cost, "requests": n, "percent": _percent(cost, total)}
                for name, cost, n in sorted(by_persona.values(), key=lambda e: -e[1])]
    steps = [{"part": p, "percent": _percent(p.cost, total)} for p in parts]
    return render_page(request, "budgets/run.html", {"run_id": run_id, "total": total, "personas": personas,
                                                     "steps": steps, "timeline": timeline,
                                                     "timeline_more": timeline_total - len(timeline)})


def _percent(part, whole) -> int:
    return round(part * 100 / whole) if whole else 0


CSV_CHUNK = 2000


def _csv(team_ids: set[int] | None, since: datetime, days: int) -> StreamingHttpResponse:
    """Streamed, a chunk of rows at a time: ninety days of a busy ledger are
    millions of rows, and the first leave while the database reads the rest.
    An async iterator, as the ASGI server serves it (a sync one Django would
    first read whole into a list)."""
    response = StreamingHttpResponse(_csv_lines(team_ids, since), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="costs-last-{days}-days.csv"'
    return response


async def _csv_lines(team_ids: set[int] | None, since: datetime):
    writer = csv_writer(Lines())  # cells a spreadsheet would run as formulas are neutralised
    yield writer.writerow(["created_at", "request_id", "team", "persona", "provider", "model", "status",
                           "input_tokens", "output_tokens", "cost_usd", "run_id", "step", "cached_tokens",
                           "cache_hit", "saved_usd"])
    rows = (selectors.model_calls_visible(team_ids=team_ids).filter(created_at__gte=since)
            .select_related("team").order_by("-created_at", "-id"))
    after = ""
    while chunk := await sync_to_async(_csv_chunk)(rows, after):
        yield "".join(writer.writerow(
            [u.created_at.isoformat(), u.request_id, u.team.name if u.team else "", u.persona, u.provider, u.model,
             u.status, u.input_tokens, u.output_tokens, u.cost_usd, u.run_id, u.step, u.cached_tokens,
             int(u.cache_hit), u.saved_usd]) for u in chunk)
        after = str(chunk[-1].pk)


def _csv_chunk(rows, after: str) -> list:
    return list(_older_than(rows, after)[:CSV_CHUNK])


def _filtered(team_ids: set[int] | None, data: dict):
    rows = selectors.usage_visible(team_ids=team_ids).select_related("team", "api_key")
    for field in ("persona", "provider", "model", "status", "run_id", "endpoint"):
        if data.get(field):
            rows = rows.filter(**{field: data[field]})
    if data.get("calls") == "model":
        rows = rows.filter(selectors.MODEL_CALL)
    elif data.get("calls") == "other":
        rows = rows.exclude(selectors.MODEL_CALL)
    if data.get("since"):
        rows = rows.filter(created_at__gte=datetime.combine(data["since"], time.min, tzinfo=UTC))
    if data.get("until"):
        rows = rows.filter(created_at__lt=datetime.combine(data["until"] + timedelta(days=1), time.min,
                                                           tzinfo=UTC))
    return rows


PAGE_ROWS = 50
# The usage log counts matches up to here and says "more than" past it: a count
# of every row of a year-long ledger is seconds on its own, and of a rare
# filter's matches a scan of most of it (docs/PERFORMANCE.md).
COUNT_CAP = 1_000


@costs_required
@require_GET
def usage_list(request: HttpRequest) -> HttpResponse:
    """Newest first, PAGE_ROWS at a time. Older pages continue from a row
    (`before=<id>`: keyset paging), never an OFFSET into millions of rows."""
    team_ids, team = _scope(request)
    form = UsageFilterForm(request.GET)
    data = form.cleaned_data if form.is_valid() else {}
    matching = _filtered(team_ids, data).order_by("-created_at", "-id")
    before = request.GET.get("before", "")
    rows = list(_older_than(matching, before)[:PAGE_ROWS + 1])
    counted = matching.order_by()[:COUNT_CAP + 1].count()
    query = request.GET.copy()
    query.pop("before", None)
    query.pop("page", None)
    context = {"form": form, "rows": rows[:PAGE_ROWS], "team": team, "teams": _teams_for_filter(request),
               "query": query.urlencode(), "before": before, "matching": counted,
               "more_than": f"{COUNT_CAP:,}" if counted > COUNT_CAP else "",
               "older": rows[PAGE_ROWS - 1].pk if len(rows) > PAGE_ROWS else None}
    return render_page(request, "budgets/usage.html", context, fragment="results")


def _older_than(rows, before: str):
    """The rows after the row `before` in newest-first order (all when it is none)."""
    anchor = rows.filter(pk=int(before)).values_list("created_at", flat=True).first() if before.isdigit() else None
    if anchor is None:
        return rows
    return rows.filter(Q(created_at__lt=anchor) | Q(created_at=anchor, pk__lt=int(before)))


@costs_required
@require_GET
def usage_detail(request: HttpRequest, usage_id: int) -> HttpResponse:
    visible = visible_team_ids(request.user)
    row = get_object_or_404(selectors.usage_visible(team_ids=visible).select_related("team", "api_key"), pk=usage_id)
    return render_page(request, "budgets/usage_detail.html", {"u": row, "attempts": _attempts_readable(row)})


def _attempts_readable(row) -> list[dict]:
    """The row's attempt log with its times as "HH:MM:SS.mmm" (all of a request's
    attempts fall within seconds; the date is on the page already)."""
    return [{**a, "at": a["at"][11:23] if a.get("at") else ""} for a in row.attempt_log or []]
