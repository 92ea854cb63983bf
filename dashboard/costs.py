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
from budgets import selectors
from budgets.exports import csv_writer
from dashboard import charts
from dashboard.forms import UsageFilterForm
from dashboard.rendering import render_page

PERIODS = (7, 30, 90)
BREAKDOWNS = [("team", "Team"), ("persona", "Persona"), ("provider", "Provider"), ("model", "Model"),
              ("run", "Workflow run")]


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
    what = f"Spend of team '{team.name}'" if team else "Spend"
    context = {
        "team": team, "teams": _teams_for_filter(request), "days": days, "periods": PERIODS,
        "chart": charts.spend_chart(selectors.spend_per_day(team_ids=team_ids, days=days), what=what),
        "total": selectors.spend_total(team_ids=team_ids, since=since),
        "breakdowns": [(label, selectors.spend_by(dimension=dim, team_ids=team_ids, since=since, limit=10))
                       for dim, label in BREAKDOWNS],
        "top_keys": selectors.spend_by(dimension="key", team_ids=team_ids, since=since, limit=10),
    }
    return render_page(request, "budgets/costs.html", context)


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
