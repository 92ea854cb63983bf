"""The costs page in Chromium, at a laptop's and a desktop's width: every
breakdown shows its numbers whole, workflow runs included."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from budgets.models import Usage
from tests.dashboard.conftest import WIDTHS, at_width, log_in, screenshot

pytestmark = pytest.mark.browser
RUN = "run-2025-06-01-refactor-billing-service-4f9a2c"  # long, as Hive's run ids are


def step(live, key: str, persona: str, run_id: str, name: str) -> httpx.Response:
    response = httpx.post(live.url + "/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}", "X-EP-Run-Id": run_id, "X-EP-Step": name},
                          json={"model": persona, "messages": [{"role": "user", "content": "Plan the work " * 40}]},
                          timeout=30)
    assert response.status_code == 200, response.text
    return response


def clipped_cells(page) -> list[str]:
    """Cells of the breakdown tables that do not show all of their text, or
    that lie outside their card (scrolled out of sight)."""
    return page.evaluate("""() => [...document.querySelectorAll('.breakdown td, .breakdown th')].filter(cell => {
        const card = cell.closest('.card').getBoundingClientRect(), box = cell.getBoundingClientRect();
        return cell.scrollWidth > cell.clientWidth + 1 || box.right > card.right + 1 || box.left < card.left - 1;
      }).map(cell => cell.closest('.card').dataset.breakdown + ': ' + cell.textContent.trim())""")


@pytest.mark.parametrize("width", WIDTHS)
def test_every_breakdown_shows_its_cost_column_whole(page, live, world, people, width):
    step(live, world.red_key, "architect", RUN, "design")
    step(live, world.red_key, "developer", RUN, "implement")
    at_width(page, width)
    log_in(page, "olive")
    page.goto("/dashboard/costs/")
    run_total = sum(u.cost_usd for u in Usage.objects.filter(run_id=RUN))
    by_run = page.locator("[data-breakdown='Workflow run']")
    expect(by_run.get_by_role("row", name=RUN)).to_contain_text("2")
    expect(by_run.get_by_role("row", name=RUN)).to_contain_text(f"${run_total:.4f}")
    screenshot(page, f"costs-{width}")
    assert clipped_cells(page) == []
