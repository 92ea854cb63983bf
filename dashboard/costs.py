"""Dashboard pages for money: costs (charts, breakdowns, CSV) and the usage log.

Every query goes through budgets.selectors with the user's visible teams, so a
team lead's numbers are their teams' alone; naming another team is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from accounts.models import Team
from accounts.roles import costs_required, visible_team_ids
from budgets import selectors, trends
from budgets.exports import csv_writer
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
    context = {
        "team": team, "teams": _teams_for_filter(request), "days": days, "periods": PERIODS,
        "stack": stack, "stacks": STACKS,
        **_spend_over_time(team_ids, team, days=days, since=since, stack=stack),
        "breakdowns": [(dim, label, selectors.spend_by(dimension=dim, team_ids=team_ids, since=since, limit=10))
                       for dim, label in BREAKDOWNS],
        "top_keys": selectors.spend_by(dimension="key", team_ids=team_ids, since=since, limit=10),
        "savings": selectors.savings(team_ids=team_ids, since=since),
        "savings_by": [(label, selectors.savings(team_ids=team_ids, since=since, dimension=dim))
                       for dim, label in SAVINGS_BY],
    }
    return render_page(request, "budgets/costs.html", context)


def _spend_over_time(team_ids: set[int] | None, team: Team | None, *, days: int, since: datetime,
                     stack: str) -> dict:
    """The stacked chart, and the same numbers for the `days` before, for comparison."""
    stacked = trends.spend_stacked(dimension=stack, team_ids=team_ids, days=days)
    before = since - timedelta(days=days)
    previous = {r["label"]: r["cost"] for r in
                selectors.spend_by(dimension=stack, team_ids=team_ids, since=before, until=since)}
    previous_total = selectors.spend_total(team_ids=team_ids, since=before, until=since)
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


def _csv(team_ids: set[int] | None, since: datetime, days: int) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="costs-last-{days}-days.csv"'
    writer = csv_writer(response)  # cells a spreadsheet would run as formulas are neutralised
    writer.writerow(["created_at", "request_id", "team", "persona", "provider", "model", "status",
                     "input_tokens", "output_tokens", "cost_usd", "run_id", "step"])
    rows = selectors.model_calls_visible(team_ids=team_ids).filter(created_at__gte=since).select_related("team")
    for u in rows.iterator(chunk_size=2000):
        writer.writerow([u.created_at.isoformat(), u.request_id, u.team.name if u.team else "", u.persona,
                         u.provider, u.model, u.status, u.input_tokens, u.output_tokens, u.cost_usd, u.run_id, u.step])
    return response


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


@costs_required
@require_GET
def usage_list(request: HttpRequest) -> HttpResponse:
    team_ids, team = _scope(request)
    form = UsageFilterForm(request.GET)
    data = form.cleaned_data if form.is_valid() else {}
    page = Paginator(_filtered(team_ids, data), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "team": team, "teams": _teams_for_filter(request), "query": query.urlencode()}
    return render_page(request, "budgets/usage.html", context, fragment="results")


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
