"""Dashboard pages for budgets and alerts. Operators edit; team leads see
their own teams' budgets and may acknowledge their alerts."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.audit import snapshot
from accounts.roles import costs_required, is_operator, operator_required, visible_team_ids
from budgets import selectors, trends
from budgets import services as editing
from budgets.models import Alert, Budget
from dashboard import charts
from dashboard.forms import BudgetForm
from dashboard.rendering import render_page


@costs_required
@require_GET
def budget_list(request: HttpRequest) -> HttpResponse:
    team_ids = visible_team_ids(request.user)
    alerts = Alert.objects.select_related("budget").filter(budget__in=selectors.budgets_visible(team_ids=team_ids))
    uses = selectors.budget_uses(team_ids=team_ids)
    for use in uses:
        use.burn = _burn_down(use.budget)
    context = {"uses": uses, "alerts": alerts[:100], "can_edit": is_operator(request.user)}
    return render_page(request, "budgets/list.html", context)


def _money(amount: Decimal) -> str:
    return f"${amount:.2f}" if amount >= 1 else f"${amount:.4f}"  # demo amounts are fractions of a cent


def _burn_down(budget: Budget) -> charts.BurnChart | None:
    """The budget's spend so far this period against its limit, and where the
    rate so far ends the period (none for a lifetime budget: no period end)."""
    burn = trends.budget_burn(budget)
    if burn is None:
        return None
    limit, forecast = budget.limit_usd, burn.forecast
    sentence = (f"At this rate: {_money(forecast)} by the period's end ({burn.end:%d %b %H:%M} UTC), "
                f"{round(forecast * 100 / limit) if limit else 0}% of the {_money(limit)} limit.")
    if burn.spent >= limit:
        sentence += " It is over its limit already."
    elif burn.runs_out_at is not None:
        sentence += f" It reaches the limit around {burn.runs_out_at:%d %b %H:%M} UTC."
    return charts.burn_chart(buckets=burn.buckets, cumulative=burn.cumulative, limit=limit, forecast=forecast,
                             label_format="%H:%M" if budget.period == "day" else "%d %b", description=sentence)


@operator_required
@require_http_methods(["GET", "POST"])
def budget_create(request: HttpRequest) -> HttpResponse:
    form = BudgetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        budget = editing.budget_save(actor=request.user, budget=form.save(commit=False), before=None)
        messages.success(request, f"Budget '{budget.name}' created.")
        return redirect("budgets:list")
    return render_page(request, "budgets/form.html", {"form": form}, status=400 if form.errors else 200)


@operator_required
@require_http_methods(["GET", "POST"])
def budget_edit(request: HttpRequest, budget_id: int) -> HttpResponse:
    budget = get_object_or_404(Budget, pk=budget_id)
    before = snapshot(budget, editing.BUDGET_FIELDS)
    form = BudgetForm(request.POST or None, instance=budget)
    if request.method == "POST" and form.is_valid():
        budget = editing.budget_save(actor=request.user, budget=form.save(commit=False), before=before)
        messages.success(request, f"Budget '{budget.name}' saved.")
        return redirect("budgets:list")
    return render_page(request, "budgets/form.html", {"form": form, "budget": budget},
                       status=400 if form.errors else 200)


@costs_required
@require_POST
def alert_acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    team_ids = visible_team_ids(request.user)
    alert = get_object_or_404(Alert.objects.select_related("budget"), pk=alert_id)
    if not selectors.budgets_visible(team_ids=team_ids).filter(pk=alert.budget_id).exists():
        raise Http404("No such alert.")  # another team's alert does not exist for this user
    if editing.alert_acknowledge(actor=request.user, alert=alert):
        messages.success(request, f"Acknowledged: {alert.message}")
    # `next` comes from the form: follow it only within this site (no open redirect).
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        next_url = "budgets:list"
    return redirect(next_url)
