"""The usage log names each row's endpoint and filters by it, or by model
calls vs the rest; the cost views count model calls only, so listing models or
reading costs is no "(none)" persona with $0 in a breakdown."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import WIDTHS, at_width, log_in, screenshot
from tests.dashboard.test_browser import ask

pytestmark = pytest.mark.browser


def traffic(live, world) -> None:
    """One model call, and two calls that ask no model (each its own Usage row)."""
    ask(live, world.red_key, persona="reviewer")
    admin = {"Authorization": f"Bearer {world.admin_key}"}
    assert httpx.get(live.url + "/v1/models", headers=admin, timeout=10).status_code == 200
    assert httpx.get(live.url + "/costs?group_by=persona", headers=admin, timeout=10).status_code == 200


def test_the_costs_api_counts_model_calls_only(live, world):
    traffic(live, world)
    body = httpx.get(live.url + "/costs?group_by=persona", headers={"Authorization": f"Bearer {world.admin_key}"},
                     timeout=10).json()
    assert body["requests"] == 1
    assert [g["group"] for g in body["groups"]] == ["reviewer"]  # no "(none)" for the models list or costs


@pytest.mark.parametrize("width", WIDTHS)
def test_the_usage_log_shows_and_filters_endpoints_and_costs_keep_to_model_calls(page, live, world, people, width):
    traffic(live, world)
    at_width(page, width)
    log_in(page, "olive")
    page.goto("/dashboard/usage/")
    results = page.locator("#results")
    expect(results).to_contain_text("3 requests match.")
    endpoints = results.locator("td[data-col=endpoint]")
    expect(endpoints).to_have_text(["costs", "models", "v1.chat.completions"])
    screenshot(page, f"usage-endpoints-{width}")

    page.get_by_label("Calls").select_option("other")
    page.get_by_role("button", name="Filter").click()
    expect(endpoints).to_have_text(["costs", "models"])
    page.get_by_label("Calls").select_option("model")
    page.get_by_role("button", name="Filter").click()
    expect(endpoints).to_have_text(["v1.chat.completions"])
    page.get_by_label("Calls").select_option("")
    page.get_by_label("Endpoint").fill("models")
    page.get_by_role("button", name="Filter").click()
    expect(endpoints).to_have_text(["models"])
    assert "endpoint=models" in page.url  # the filter is in the address, to share or reload

    page.goto("/dashboard/costs/")
    by_persona = page.locator("[data-breakdown=Persona]")
    expect(by_persona.locator("tbody tr")).to_have_count(1)
    expect(by_persona).to_contain_text("reviewer")
    expect(by_persona).not_to_contain_text("(none)")
