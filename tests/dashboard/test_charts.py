"""What team leads look at rather than read, in Chromium at a laptop's, a
desktop's and a phone's width: spend over time stacked by a dimension against
the previous period, each budget's burn-down with a forecast, and a workflow
run's cost by persona and step. Server-rendered SVG: no script, no CDN."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from budgets.models import Budget, Usage
from tests.dashboard.conftest import WIDTHS, at_width, log_in, screenshot
from tests.dashboard.test_costs_page import step

pytestmark = pytest.mark.browser
PHONE = 390
RUN = "run-charts-1"


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def earlier_spend(world, persona: str, cost: str, days_ago: int) -> None:
    """A request of the previous period (the ledger's own row, dated back)."""
    Usage.objects.create(request_id=f"req_earlier_{persona}", created_at=timezone.now() - timedelta(days=days_ago),
                         team=world.red, persona=persona, provider="demo", model="demo", endpoint="v1.chat.completions",
                         attempts=1, cost_usd=Decimal(cost))


@pytest.mark.parametrize("width", [*WIDTHS, PHONE])
def test_spend_over_time_is_stacked_by_persona_and_compared_with_the_period_before(page, live, world, people, width):
    step(live, world.red_key, "architect", "", "")
    step(live, world.red_key, "architect", "", "")
    step(live, world.red_key, "developer", "", "")
    earlier_spend(world, "architect", "0.0001", days_ago=35)  # in the 30 days before the last 30
    architect = sum(u.cost_usd for u in Usage.objects.filter(persona="architect", created_at__gte=timezone.now()
                                                             - timedelta(days=1)))
    at_width(page, width)
    log_in(page, "rita")  # a team lead: red's spend only
    page.goto("/dashboard/costs/")
    legend = page.locator("#spend-over-time .legend")
    expect(legend.locator("[data-series=architect]")).to_contain_text(f"architect: ${architect:.4f}")
    change = round((architect - Decimal("0.0001")) * 100 / Decimal("0.0001"))
    expect(legend.locator("[data-series=architect]")).to_contain_text(f"(+{change}% vs $0.0001)")
    expect(legend.locator("[data-series=developer]")).to_contain_text("(new vs $0.0000)")
    today = page.locator("[data-testid=spend-chart] g.day").last
    expect(today.locator("rect")).to_have_count(2)  # architect and developer, stacked
    assert Decimal(today.get_attribute("data-total")) == sum(u.cost_usd for u in Usage.objects.filter(
        created_at__gte=timezone.now() - timedelta(days=1)))
    expect(page.get_by_test_id("comparison")).to_contain_text("against the 30 days before ($0.0001)")
    assert no_sideways_scroll(page)
    screenshot(page, f"costs-stacked-{width}")

    page.get_by_label("Stack by").select_option("team")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#spend-over-time h2")).to_contain_text("Spend per day by team")
    expect(legend.locator("li")).to_have_count(1)
    expect(legend.locator("[data-series=red]")).to_be_visible()


@pytest.mark.parametrize("width", [*WIDTHS, PHONE])
def test_each_budget_shows_its_burn_down_and_forecast(page, live, world, people, width):
    step(live, world.red_key, "architect", "", "")
    Budget.objects.create(name="red monthly", scope="team", team=world.red, period="month", limit_usd=Decimal("5"))
    Budget.objects.create(name="red tiny daily", scope="team", team=world.red, period="day",
                          limit_usd=Decimal("0.0001"))
    Budget.objects.create(name="red lifetime", scope="team", team=world.red, period="lifetime", limit_usd=Decimal("9"))
    at_width(page, width)
    log_in(page, "rita")
    page.goto("/dashboard/budgets/")
    monthly = page.locator(".budget-row", has_text="red monthly")
    caption = monthly.locator("figcaption")
    expect(caption).to_contain_text(re.compile(r"At this rate: \$\d+\.\d{4} by the period's end \(01 \w{3} 00:00 UTC\)"))
    expect(caption).not_to_contain_text("reaches the limit")
    assert len(monthly.locator("polyline.actual").get_attribute("points").split()) >= 2
    expect(page.locator(".budget-row", has_text="red tiny daily").locator("figcaption")).to_contain_text(
        "It is over its limit already.")
    expect(page.locator(".budget-row", has_text="red lifetime").get_by_test_id("burn-down")).to_have_count(0)
    assert no_sideways_scroll(page)
    screenshot(page, f"budgets-burn-down-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_run_is_broken_down_by_persona_and_step(page, live, world, people, width):
    for persona, name in (("architect", "design"), ("developer", "implement"), ("developer", "test")):
        step(live, world.red_key, persona, RUN, name)
    rows = Usage.objects.filter(run_id=RUN)
    at_width(page, width)
    log_in(page, "rita")
    page.goto("/dashboard/costs/")
    page.locator("[data-breakdown='Workflow run']").get_by_role("link", name=RUN).click()
    expect(page.get_by_test_id("run-total")).to_have_text(f"${sum(u.cost_usd for u in rows):.6f}")
    expect(page.locator("#by-persona li")).to_have_count(2)
    developer = sum(u.cost_usd for u in rows if u.persona == "developer")
    expect(page.locator("#by-persona [data-persona=developer]")).to_contain_text(f"${developer:.6f}")
    expect(page.locator("#by-step tbody tr")).to_have_count(3)
    assert page.locator("#by-step tbody tr").evaluate_all("rows => rows.map(r => r.dataset.step)") == [
        "design", "implement", "test"]
    screenshot(page, f"run-{width}")
    log_in_as_other_lead = page.request.get(f"/dashboard/runs/{RUN}/")
    assert log_in_as_other_lead.status == 200
    page.get_by_role("button", name="Log out").click()
    log_in(page, "bruno")  # blue's lead: red's run does not exist for him
    assert page.request.get(f"/dashboard/runs/{RUN}/").status == 404
