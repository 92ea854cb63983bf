"""Caching savings in Chromium: an operator turns a persona's response cache on
in its page (audited), agents repeat themselves, and the costs page shows what
the response cache and provider prompt caching saved, per team and persona;
a team lead sees their team's savings only."""

from __future__ import annotations

import uuid

import openai
import pytest
from playwright.sync_api import expect

from accounts.models import AuditEntry
from budgets.models import Usage
from personas.models import Persona
from providers.models import Model
from tests.dashboard.conftest import WIDTHS, at_width, log_in, screenshot
from tests.fakes.common import FakeReply
from tests.streaming_support import route_persona_to_fake

pytestmark = pytest.mark.browser


def ask(live, key: str, persona: str, prompt: str, **options):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model=persona, messages=[{"role": "user", "content": prompt}], **options)


def turn_the_cache_on(page, slug: str) -> None:
    page.goto(f"/dashboard/personas/{slug}/")
    page.get_by_label("Response cache", exact=True).check()
    page.get_by_label("Cache lifetime (seconds)").fill("900")
    page.get_by_role("button", name="Save persona").click()
    expect(page.get_by_text(f"Persona '{slug}' saved.")).to_be_visible()


def money(value) -> str:
    return f"${value:.4f}"


@pytest.mark.parametrize("width", WIDTHS)
def test_the_costs_page_shows_what_caching_saved_per_team_and_persona(page, live, world, people, fake, width):
    at_width(page, width)
    log_in(page, "olive")
    turn_the_cache_on(page, "architect")
    persona = Persona.objects.get(slug="architect")
    assert (persona.cache_enabled, persona.cache_ttl_seconds) == (True, 900)
    audit = AuditEntry.objects.get(action="persona.update", target_label="architect")
    assert "cache_enabled" in audit.summary and audit.after["cache_enabled"] is True

    # red repeats a question (the second answer comes from the cache); blue's
    # persona is served by a provider that read most of the prompt from its cache.
    prompt = f"Design the billing service ({uuid.uuid4()})"
    assert ask(live, world.red_key, "architect", prompt, temperature=0).headers["x-ep-cache"] == "miss"
    assert ask(live, world.red_key, "architect", prompt, temperature=0).headers["x-ep-cache"] == "hit"
    fake.reset()
    route_persona_to_fake(fake)
    Model.objects.filter(name=fake.model).update(cached_input_price="0.1")  # a tenth of the input price
    fake.script(FakeReply(input_tokens=1000, output_tokens=10, cached_tokens=800))
    ask(live, world.blue_key, "via-openai", "Review the plan")
    hit = Usage.objects.get(cache_hit=True)
    prompt_cached = Usage.objects.get(persona="via-openai")
    assert hit.saved_usd > 0 and prompt_cached.saved_usd > 0

    page.goto("/dashboard/costs/")
    savings = page.get_by_test_id("savings")
    expect(savings.get_by_role("heading", level=2)).to_contain_text(money(hit.saved_usd + prompt_cached.saved_usd))
    expect(page.get_by_test_id("savings-summary")).to_contain_text("1 answer served from the cache")
    expect(page.get_by_test_id("savings-summary")).to_contain_text("800 input tokens")
    by_team = savings.locator("[data-breakdown='Savings by team']")
    expect(by_team.get_by_role("row", name="red")).to_contain_text(money(hit.saved_usd))
    expect(by_team.get_by_role("row", name="blue")).to_contain_text(money(prompt_cached.saved_usd))
    by_persona = savings.locator("[data-breakdown='Savings by persona']")
    expect(by_persona.get_by_role("row", name="architect")).to_contain_text("1")
    expect(by_persona.get_by_role("row", name="via-openai")).to_contain_text(money(prompt_cached.saved_usd))
    screenshot(page, f"costs-savings-{width}")
    assert _clipped(page) == []

    page.goto(f"/dashboard/usage/{hit.pk}/")
    expect(page.get_by_text(f"answered from the response cache: ${hit.saved_usd} saved")).to_be_visible()
    expect(page.locator("#attempts")).to_contain_text("the answer came from the response cache")


def test_a_team_lead_sees_their_teams_savings_only(page, live, world, people, fake):
    persona = Persona.objects.get(slug="architect")
    persona.cache_enabled = persona.cache_shared = True
    persona.save()
    prompt = f"Design the billing service ({uuid.uuid4()})"
    ask(live, world.red_key, "architect", prompt, temperature=0)
    assert ask(live, world.blue_key, "architect", prompt, temperature=0).headers["x-ep-cache"] == "hit"

    log_in(page, "rita")  # lead of red: blue's hit is not hers to see
    page.goto("/dashboard/costs/")
    savings = page.get_by_test_id("savings")
    expect(savings.get_by_role("heading", level=2)).to_contain_text("$0.0000")
    expect(savings.locator("[data-breakdown='Savings by team']")).to_contain_text("Nothing saved by caching")
    expect(savings.locator("[data-breakdown='Savings by team']").get_by_role("row", name="blue")).to_have_count(0)


def _clipped(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('#savings td, #savings th')].filter(cell => {
        const card = cell.closest('.breakdown').getBoundingClientRect(), box = cell.getBoundingClientRect();
        return cell.scrollWidth > cell.clientWidth + 1 || box.right > card.right + 1 || box.left < card.left - 1;
      }).map(cell => cell.textContent.trim())""")


# -- without a browser: the persona form's checks, the selector's arithmetic ---------------------


def test_a_cache_lifetime_out_of_range_is_refused_by_name(people):
    from django.urls import reverse

    from tests.dashboard.conftest import client_for

    persona = Persona.objects.get(slug="architect")
    form = {"slug": "architect", "name": persona.name, "system_prompt": persona.system_prompt, "enabled": "on",
            "cache_enabled": "on", "cache_ttl_seconds": "0"}
    response = client_for(people.olive).post(reverse("personas:edit", args=["architect"]), form)
    assert response.status_code == 400
    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    assert not Persona.objects.get(slug="architect").cache_enabled


def test_savings_add_up_hits_and_prompt_caching_apart_per_team(people, world):
    from decimal import Decimal

    from budgets import selectors
    from budgets.selectors import day_start

    def row(team, persona, **fields):
        Usage.objects.create(request_id=f"req-{uuid.uuid4()}", team=team, persona=persona,
                             endpoint="v1.chat.completions", **fields)

    row(world.red, "architect", cache_hit=True, saved_usd=Decimal("0.25"), output_tokens=10)
    row(world.red, "architect", cache_hit=True, saved_usd=Decimal("0.25"))
    row(world.red, "reviewer", cached_tokens=900, saved_usd=Decimal("0.10"), cost_usd=Decimal("0.05"))
    row(world.blue, "reviewer", cached_tokens=0, saved_usd=Decimal("-0.02"), cost_usd=Decimal("0.30"))  # a cache write
    row(world.blue, "reviewer", cost_usd=Decimal("1"))  # no caching: not a saving row

    total = selectors.savings(team_ids=None, since=day_start())
    assert (total["hits"], total["cache_saved"], total["prompt_saved"], total["cached_tokens"]) == (
        2, Decimal("0.5"), Decimal("0.08"), 900)
    by_team = {r["label"]: (r["hits"], r["saved"]) for r in selectors.savings(team_ids=None, since=day_start(),
                                                                              dimension="team")}
    assert by_team == {"red": (2, Decimal("0.6")), "blue": (0, Decimal("-0.02"))}
    only_blue = selectors.savings(team_ids={world.blue.pk}, since=day_start())
    assert (only_blue["hits"], only_blue["saved"]) == (0, Decimal("-0.02"))
