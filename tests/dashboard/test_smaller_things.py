"""The smaller things a newcomer trips on, in Chromium at 1366 and 1920 px:
the new-provider form offers no key removal before there is a key, the audit
log reads as before/after in words, a key's scopes sit side by side."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from providers.models import Provider
from tests.dashboard.conftest import WIDTHS, at_width, log_in, screenshot

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width", WIDTHS)
def test_removing_the_stored_key_is_offered_only_once_there_is_one(page, live, world, people, width):
    at_width(page, width)
    log_in(page, "ada")  # an admin: base URL and options too
    page.goto("/dashboard/providers/new/")
    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    expect(page.get_by_label("Remove the stored API key")).to_have_count(0)
    page.get_by_label("Name").fill("vllm")
    page.get_by_label("Kind").select_option("openai")
    page.get_by_role("button", name="Create provider").click()
    expect(page.locator(".messages")).to_contain_text("Provider 'vllm' created.")
    expect(page.get_by_label("Remove the stored API key")).to_have_count(0)  # saved without a key
    page.get_by_label("API key", exact=True).fill("sk-test-stored-key")
    page.get_by_role("button", name="Save provider").click()
    expect(page.get_by_label("Remove the stored API key")).to_be_visible()
    page.get_by_label("Remove the stored API key").check()
    page.get_by_role("button", name="Save provider").click()
    expect(page.locator(".messages")).to_contain_text("Provider 'vllm' saved.")
    assert not Provider.objects.get(name="vllm").has_credential


@pytest.mark.parametrize("width", WIDTHS)
def test_the_audit_log_reads_as_before_and_after_and_scopes_sit_side_by_side(page, live, world, people, width):
    at_width(page, width)
    log_in(page, "olive")
    page.goto("/dashboard/keys/")
    scopes = page.get_by_role("group", name="Scopes")
    tops = {round(box["y"]) for box in scopes.locator("label.choice").evaluate_all(
        "labels => labels.map(l => l.getBoundingClientRect().toJSON())")}
    assert len(tops) == 1, tops  # chat, direct, admin on one line
    page.get_by_label("Team", exact=True).first.select_option(label="blue")
    page.get_by_label("Name", exact=True).first.fill("hive ci")
    scopes.get_by_label("direct").check()
    page.get_by_role("button", name="Create key").click()
    page.goto("/dashboard/keys/")
    page.get_by_role("button", name="Revoke key hive ci of team blue").click()

    page.goto("/dashboard/audit/")
    created = page.locator("tr[data-action='key.create']")
    expect(created).to_contain_text("scopes: chat, direct")
    expect(created).to_contain_text("team: blue")
    revoked = page.locator("tr[data-action='key.revoke']")
    expect(revoked.locator("del")).to_have_count(0)  # it was not revoked before: nothing struck out
    expect(revoked).to_contain_text("revoked at:")
    assert "{'" not in page.locator("main").inner_text() and "['" not in page.locator("main").inner_text()
    screenshot(page, f"audit-{width}")
