"""Every other dashboard page in Chromium: providers, budgets, keys, usage,
audit; each writes a screenshot."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from accounts.models import ApiKey, AuditEntry
from budgets.models import Budget
from providers.models import Provider
from tests.dashboard.conftest import expect_console_error, log_in, screenshot

pytestmark = pytest.mark.browser
SECRET = "sk-test-never-shown-0123456789"


def test_an_operator_sets_a_write_only_key_and_tests_the_connection(page, live, world, people):
    log_in(page, "olive")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Providers").click()
    expect(page.get_by_role("row", name="demo")).to_contain_text("demo: simulated answers")
    screenshot(page, "providers")
    page.get_by_role("link", name="demo", exact=True).click()
    page.get_by_label("API key", exact=True).fill(SECRET)
    page.get_by_role("button", name="Save provider").click()
    expect(page.locator(".messages")).to_contain_text("Provider 'demo' saved.")
    assert SECRET not in page.content()
    expect(page.get_by_label("API key", exact=True)).to_have_value("")
    assert Provider.objects.get(name="demo").get_credential() == SECRET
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#test-result")).to_contain_text("Connected: demo answered in")
    screenshot(page, "provider-edit")
    entry = AuditEntry.objects.get(action="provider.update")
    assert entry.before["credential"] == "not set" and entry.after["credential"] == "replaced"
    assert SECRET not in str(entry.before) + str(entry.after)


def test_an_operator_creates_a_budget_and_keys_and_reads_the_logs(page, live, world, people):
    log_in(page, "olive")
    page.goto("/dashboard/budgets/new/")
    # The form comes back with its errors as a 400, which Chromium logs.
    expect_console_error(page, f"status of 400 (Bad Request) ({live.url}/dashboard/budgets/new/)")
    page.get_by_label("Name").fill("red monthly")
    page.get_by_label("Scope").select_option("team")
    page.get_by_label("Limit (USD)").fill("0.001")
    page.get_by_role("button", name="Create budget").click()
    expect(page.locator(".field.has-error")).to_contain_text("A team budget needs a team.")
    page.get_by_label("Team", exact=True).select_option(label="red")
    page.get_by_role("button", name="Create budget").click()
    expect(page.locator(".messages")).to_contain_text("Budget 'red monthly' created.")
    assert Budget.objects.get(name="red monthly").thresholds == [50, 80, 100]
    screenshot(page, "budgets")

    page.goto("/dashboard/keys/")
    page.get_by_label("Team", exact=True).select_option(label="blue")
    page.get_by_label("Name", exact=True).fill("hive staging")
    page.get_by_role("button", name="Create key").click()
    raw = page.get_by_test_id("new-key").inner_text().strip()
    screenshot(page, "keys-new-key")
    answer = httpx.post(live.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {raw}"},
                        json={"model": "reviewer", "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
    assert answer.status_code == 200
    page.goto("/dashboard/keys/")
    assert raw not in page.content()  # shown once only
    page.get_by_role("button", name="Revoke key hive staging of team blue").click()
    expect(page.locator(".messages")).to_contain_text("Key 'hive staging'")
    assert ApiKey.objects.get(name="hive staging").revoked_at is not None

    page.goto("/dashboard/usage/")
    page.get_by_label("Persona").fill("reviewer")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#results")).to_contain_text("1 requests match.")
    page.locator("#results a").first.click()
    expect(page.locator("h1")).to_contain_text(answer.headers["X-Request-ID"])
    expect(page.locator("dl")).to_contain_text("hive staging")
    assert raw not in page.content() and raw[:10] in page.content()  # the prefix, never the key
    screenshot(page, "usage-detail")

    page.goto("/dashboard/audit/")
    expect(page.locator("tbody")).to_contain_text("Created budget 'red monthly'")
    expect(page.locator("tbody")).to_contain_text("Revoked key 'hive staging'")
    expect(page.locator("tbody")).to_contain_text("olive")
    screenshot(page, "audit")
