"""The dashboard in headless Chromium against a live daphne server."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from accounts.models import AuditEntry
from budgets.models import Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.dashboard.conftest import log_in, screenshot

pytestmark = pytest.mark.browser


@pytest.fixture
def backup(world) -> Provider:
    """A second (demo-kind) provider, second in architect's route."""
    provider = Provider.objects.create(name="backup", kind="demo", options={"latency_ms": 0, "chunk_delay_ms": 0})
    Model.objects.create(provider=provider, name="demo")
    RouteStep.objects.create(persona=Persona.objects.get(slug="architect"), position=1, provider=provider, model="demo")
    return provider


def ask(live, key: str, persona: str = "architect") -> httpx.Response:
    response = httpx.post(live.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": persona, "messages": [{"role": "user", "content": "Plan it"}]}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def test_an_operator_reorders_a_route_and_the_next_request_follows_it(page, live, world, people, backup):
    assert ask(live, world.red_key).headers["X-EP-Provider"] == "demo"
    log_in(page, "olive")
    screenshot(page, "overview-operator")
    page.get_by_role("link", name="Personas").click()
    screenshot(page, "personas")
    page.get_by_role("link", name="architect").click()
    steps = page.locator("#chain li.step")
    expect(steps).to_have_count(2)
    page.evaluate("window.notReloaded = true")
    # By keyboard: focus the button and press Enter.
    page.get_by_role("button", name="Move backup/demo up").focus()
    page.keyboard.press("Enter")
    expect(steps.first).to_have_attribute("data-provider", "backup")
    expect(page.locator("#chain .notice")).to_contain_text("Moved backup/demo up.")
    assert page.evaluate("window.notReloaded") is True  # an htmx fragment, not a page load
    # Focus stays on the moved step (now first, so on its "down" button) for the next key press.
    expect(page.get_by_role("button", name="Move backup/demo down")).to_be_focused()  # once htmx settled
    screenshot(page, "persona-route-reordered")

    response = ask(live, world.red_key)
    assert response.headers["X-EP-Provider"] == "backup"
    row = Usage.objects.get(request_id=response.headers["X-Request-ID"])
    assert (row.provider, row.persona) == ("backup", "architect")
    entry = AuditEntry.objects.get(action="route.reorder")
    assert entry.actor_name == "olive"
    assert entry.before == {"route": ["demo/demo", "backup/demo"]}
    assert entry.after == {"route": ["backup/demo", "demo/demo"]}


def test_an_operator_edits_adds_and_removes_steps_with_validation(page, live, world, people, backup):
    log_in(page, "olive")
    page.goto("/dashboard/personas/architect/")
    page.evaluate("window.notReloaded = true")
    first = page.locator("#chain li.step").first
    first.get_by_label("Parameters (JSON)").fill('{"temperature": 7}')
    first.get_by_role("button", name="Save step 1").click()
    expect(page.locator("#chain [role=alert]")).to_contain_text("temperature must be a number from 0 to 2")
    first = page.locator("#chain li.step").first
    first.get_by_label("Parameters (JSON)").fill('{"temperature": 0.2}')
    first.get_by_role("button", name="Save step 1").click()
    expect(page.locator("#chain .notice")).to_contain_text("Saved demo/demo.")
    add = page.locator("#chain form.add-step")
    add.get_by_label("Provider").select_option("backup")
    add.get_by_label("Model").fill("demo-large")
    add.get_by_role("button", name="Add step").click()
    expect(page.locator("#chain li.step")).to_have_count(3)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove backup/demo-large").click()
    expect(page.locator("#chain li.step")).to_have_count(2)
    assert page.evaluate("window.notReloaded") is True
    steps = list(Persona.objects.get(slug="architect").steps.order_by("position").values_list("model", "params"))
    assert steps == [("demo", {"temperature": 0.2}), ("demo", {})]
    screenshot(page, "persona-edit")


def test_the_playground_streams_a_persona_answer_into_the_page(page, live, world, people):
    log_in(page, "olive")
    page.goto("/dashboard/personas/developer/")
    page.get_by_label("Message").fill("Write a haiku")
    page.get_by_role("button", name="Send to developer").click()
    expect(page.locator("#playground-output")).to_contain_text("[demo]")
    expect(page.locator("#playground-meta")).to_contain_text("Answered by demo/demo")
    screenshot(page, "playground")
    row = Usage.objects.get(endpoint="dashboard.playground")
    assert (row.persona, row.team.name, row.status, row.stream) == ("developer", "dashboard", "ok", True)


def test_a_team_lead_sees_only_their_teams_costs_with_a_chart(page, live, world, people):
    ask(live, world.red_key)
    ask(live, world.blue_key, persona="reviewer")
    red_cost = Usage.objects.get(team=world.red).cost_usd
    log_in(page, "rita")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Personas")).to_have_count(0)  # no routing for leads
    nav.get_by_role("link", name="Costs").click()
    chart = page.get_by_test_id("spend-chart")
    expect(chart).to_be_visible()
    assert chart.locator("g.day").count() == 30
    tallest = max(float(h) for h in chart.locator("g.day rect").evaluate_all("bars => bars.map(b => b.getAttribute('height'))"))
    assert tallest > 0  # today's red spend is drawn
    expect(page.locator("figcaption")).to_contain_text(f"${red_cost:.4f}")
    by_team = page.locator("[data-breakdown=Team]")
    expect(by_team).to_contain_text("red")
    expect(by_team).not_to_contain_text("blue")
    expect(page.locator("[data-breakdown=Persona]")).not_to_contain_text("reviewer")  # blue's persona
    screenshot(page, "costs-team-lead")
    assert page.request.get(f"/dashboard/costs/?team={world.blue.pk}").status == 404
    page.set_viewport_size({"width": 380, "height": 800})  # a phone
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    screenshot(page, "costs-team-lead-narrow")


@pytest.mark.parametrize("who", ["ada", "olive"])  # an admin, and an operator (not staff)
def test_a_live_request_appears_on_the_overview_over_the_websocket(page, live, world, people, who):
    log_in(page, who)
    feed = page.locator("#live-feed")
    expect(feed).to_contain_text("No requests yet.")
    # Connected: polling is off from here, so only a websocket event can bring the row.
    expect(feed).to_have_attribute("data-live", "ws")
    expect(page.locator("#live-state")).to_have_text("Live: connected.")
    response = ask(live, world.red_key, persona="developer")
    row = feed.locator(f"tr[data-request-id='{response.headers['X-Request-ID']}']")
    expect(row).to_contain_text("developer", timeout=4_000)
    expect(row).to_contain_text("demo/demo")
    screenshot(page, f"overview-live-{who}")
