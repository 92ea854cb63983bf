"""The model catalog in the browser (Chromium at 1366 and 1920 px): an operator
refreshes a provider's catalog from its list-models endpoint (the wire-level
fake), overrides a price, and picks a model for a route step from the catalog,
with price, limits and a typical call's cost beside each step."""

from __future__ import annotations

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from accounts.models import AuditEntry
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.dashboard.conftest import WIDTHS, at_width, log_in
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def openai_fake():
    fake = FakeOpenAIServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def vendor(openai_fake):
    provider = Provider(name="openai-main", kind="openai", base_url=openai_fake.base_url + "/v1", read_timeout=5)
    provider.set_credential("sk-test-catalog")
    provider.save()
    return provider


@pytest.mark.parametrize("width", WIDTHS)
def test_an_operator_refreshes_the_catalog_and_overrides_a_price(page, live, world, people, vendor, width):
    at_width(page, width)
    log_in(page, "olive")
    page.goto("/dashboard/providers/openai-main/")
    catalog = page.locator("#model-catalog")
    expect(catalog).to_contain_text("No models yet")
    page.get_by_role("button", name="Refresh from the provider").click()
    expect(page.locator(".messages")).to_contain_text("Model catalog of openai-main: 1 added, 0 completed, from provider")
    row = catalog.get_by_role("row").filter(has_text="gpt-4o-mini")
    expect(row).to_contain_text("0.15")  # genai-prices' input price
    expect(row).to_contain_text("128000")
    row.get_by_role("link", name="gpt-4o-mini").click()
    page.get_by_label("Input $/M tokens", exact=True).fill("0.2")
    page.get_by_label("Tools", exact=True).select_option(label="No")
    page.get_by_role("button", name="Save model").click()
    expect(page.locator(".messages")).to_contain_text("Saved model openai-main/gpt-4o-mini.")
    expect(catalog.get_by_role("row").filter(has_text="gpt-4o-mini")).to_contain_text("tools")  # lacks tools
    model = Model.objects.get(provider=vendor, name="gpt-4o-mini")
    assert (model.input_price, model.supports_tools) == (Decimal("0.2"), False)
    assert AuditEntry.objects.filter(action="model.update").exists()
    page.get_by_role("button", name="Refresh from the provider").click()  # the override stays
    expect(page.locator(".messages")).to_contain_text("0 added, 0 completed")
    assert Model.objects.get(pk=model.pk).input_price == Decimal("0.2")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_route_editor_picks_from_the_catalog_and_prices_each_step(page, live, world, people, vendor, width):
    at_width(page, width)
    Model.objects.create(provider=vendor, name="gpt-4o-mini", input_price=Decimal("0.15"), output_price=Decimal("0.6"),
                         context_window=128_000, max_output_tokens=16_384, source="provider")
    persona = Persona.objects.create(slug="writer")
    RouteStep.objects.create(persona=persona, provider=world.demo, model="demo")
    log_in(page, "olive")
    page.goto("/dashboard/personas/writer/")
    options = page.locator("#known-models option[value='gpt-4o-mini']")
    expect(options).to_have_count(1)
    assert "$0.15 in / $0.6 out per M · 128000 context · 16384 max out" in options.text_content()
    add = page.locator("form.add-step")
    add.get_by_label("Provider").select_option("openai-main")
    add.get_by_label("Model").fill("gpt-4o-mini")
    add.get_by_role("button", name="Add step").click()
    lines = page.get_by_test_id("step-catalog")
    expect(lines).to_have_count(2)
    # 1,000 tokens in and 500 out at $0.15 / $0.6 per million: $0.00045
    expect(lines.nth(1)).to_contain_text("openai-main/gpt-4o-mini: $0.15 in / $0.6 out per M")
    expect(lines.nth(1)).to_contain_text("≈ $0.00045")
    expect(lines.nth(0)).to_contain_text("demo/demo")
    # a custom name is still allowed, and said to be outside the catalog
    add.get_by_label("Provider").select_option("openai-main")
    add.get_by_label("Model").fill("my-finetune-1")
    add.get_by_role("button", name="Add step").click()
    expect(lines).to_have_count(3)
    expect(lines.nth(2)).to_contain_text("my-finetune-1 is not in openai-main's catalog")
    assert list(persona.steps.order_by("position").values_list("model", flat=True)) == [
        "demo", "gpt-4o-mini", "my-finetune-1"]
