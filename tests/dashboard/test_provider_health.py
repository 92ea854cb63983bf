"""Provider health counts every attempt: a provider a request fell back from
shows its failures on the Providers page, the overview and /health, and the
request's usage detail lists each attempt with its error and time."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from personas.models import Persona, RouteStep
from tests.dashboard.conftest import WIDTHS, at_width, log_in, screenshot
from tests.fakes.common import Fault

pytestmark = pytest.mark.browser


@pytest.fixture
def failing_openai(via_fake, world):
    """via-openai: the OpenAI fake first (answering 500 twice: both attempts of
    the step), then the demo provider."""
    RouteStep.objects.create(persona=Persona.objects.get(slug="via-openai"), position=1, provider=world.demo,
                             model="demo")
    via_fake.script(Fault("status", status=500, message="upstream exploded"),
                    Fault("status", status=500, message="upstream exploded"))
    return via_fake


def ask_via_openai(live, world) -> httpx.Response:
    response = httpx.post(live.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {world.red_key}"},
                          json={"model": "via-openai", "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["X-EP-Provider"] == "demo"  # served by the fallback
    return response


def test_health_counts_the_failed_attempts_of_a_provider_that_was_fallen_back_from(live, world, failing_openai):
    ask_via_openai(live, world)
    providers = httpx.get(live.url + "/health", timeout=10).json()["providers"]
    openai, demo = providers["openai"], providers["demo"]
    assert (openai["requests_5m"], openai["attempts_5m"], openai["failed_attempts_5m"]) == (1, 2, 2)
    assert openai["error_rate_5m"] == 1.0
    assert openai["last_failure_5m"]["outcome"] == "unavailable"
    assert "error" not in openai["last_failure_5m"]  # /health answers anyone: no provider message
    assert (demo["attempts_5m"], demo["failed_attempts_5m"], demo["error_rate_5m"]) == (1, 0, 0.0)


@pytest.mark.parametrize("width", WIDTHS)
def test_operators_see_each_attempt_and_the_failures_of_a_fallen_back_provider(
        page, live, world, people, failing_openai, width):
    request_id = ask_via_openai(live, world).headers["X-Request-ID"]
    at_width(page, width)
    log_in(page, "olive")
    expect(page.locator("section", has_text="Provider health")).to_contain_text("openai: 2 calls, 2 failed (100%)")
    screenshot(page, f"overview-provider-health-{width}")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Providers").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="openai", exact=True))
    expect(row.locator("[data-col=calls]")).to_have_text("2")
    expect(row.locator("[data-col=failed]")).to_have_text("2 (100%)")
    expect(row.locator("[data-col=last-failure]")).to_contain_text("upstream exploded")
    screenshot(page, f"providers-health-{width}")

    page.goto("/dashboard/usage/")
    page.get_by_role("link", name=request_id[:13]).click()
    attempts = page.locator("#attempts tbody tr")
    expect(attempts).to_have_count(3)
    for index in (0, 1):
        expect(attempts.nth(index)).to_have_attribute("data-outcome", "unavailable")
        expect(attempts.nth(index)).to_contain_text(f"openai/{failing_openai.model}")
        expect(attempts.nth(index)).to_contain_text("upstream exploded")
        expect(attempts.nth(index).locator("td").nth(1)).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
    expect(attempts.nth(2)).to_have_attribute("data-outcome", "ok")
    expect(attempts.nth(2)).to_contain_text("demo/demo")
    screenshot(page, f"usage-detail-attempts-{width}")
