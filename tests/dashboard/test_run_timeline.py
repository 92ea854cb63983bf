"""The run page's timeline in Chromium: a run whose persona ran a tool on the
platform shows its model calls and its tool call in the order they started,
with costs, durations and statuses; reached from the costs page, and from a
request's detail page."""

from __future__ import annotations

import openai
import pytest
from playwright.sync_api import expect

from accounts.models import Team
from accounts.services import DASHBOARD_TEAM
from budgets.models import Usage
from tests.api.tool_loop_support import fakes_running, tooled_setup
from tests.dashboard.conftest import log_in, screenshot
from tests.fakes.common import FakeReply, FakeToolCall
from tools.models import PersonaTools, ToolGrant

pytestmark = pytest.mark.browser
RUN = "run-2026-12-06-release-notes-7c1e"


@pytest.fixture(scope="module")
def fakes():
    yield from fakes_running()


@pytest.fixture
def tooled(fakes, world):
    return tooled_setup(fakes, world)


def tool_loop_run(live, world, fake) -> None:
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("builtin__current_time", {})]),
                FakeReply(text="", tool_calls=[FakeToolCall("builtin__run_cost", {"run_id": 3})]),
                FakeReply(text="Done."))
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=world.red_key, max_retries=0)
    answer = client.chat.completions.create(model="tools-openai", messages=[{"role": "user", "content": "Go"}],
                                            extra_headers={"X-EP-Run-Id": RUN, "X-EP-Step": "write"})
    assert answer.choices[0].message.content == "Done."


def test_the_run_page_shows_model_and_tool_calls_in_order(page, live, world, people, tooled):
    tool_loop_run(live, world, tooled["openai"])
    log_in(page, "rita")  # red's lead: her team's run
    page.goto("/dashboard/costs/")
    page.locator("[data-breakdown='Workflow run']").get_by_role("link", name=RUN).click()
    timeline = page.locator("#timeline tbody tr")
    expect(timeline).to_have_count(5)
    kinds = [row.get_attribute("data-kind") for row in timeline.all()]
    assert kinds == ["model", "tool", "model", "tool", "model"]
    calls = list(Usage.objects.filter(run_id=RUN).order_by("created_at"))
    first = timeline.nth(0)
    expect(first).to_contain_text("Model call: openai/gpt-4o-mini")
    expect(first).to_contain_text(f"${calls[0].cost_usd:.6f}")
    expect(first.get_by_role("link", name=calls[0].request_id)).to_be_visible()
    expect(timeline.nth(1)).to_contain_text("Tool: builtin__current_time")
    refused = timeline.nth(3)
    expect(refused).to_contain_text("Tool: builtin__run_cost")
    expect(refused).to_contain_text("invalid_arguments")
    assert refused.get_attribute("data-status") == "refused"
    screenshot(page, "run-timeline")

    # a model call's detail page leads back to its run
    first.get_by_role("link", name=calls[0].request_id).click()
    page.get_by_role("link", name=RUN).click()
    expect(page.locator("#timeline")).to_be_visible()


def test_a_capped_loop_shows_the_refused_model_call_and_why(page, live, world, people, tooled):
    PersonaTools.objects.filter(persona__slug="tools-openai").update(max_steps=1)
    with pytest.raises(openai.UnprocessableEntityError):
        tool_loop_run(live, world, tooled["openai"])
    log_in(page, "olive")
    page.goto(f"/dashboard/runs/{RUN}/")
    last = page.locator("#timeline tbody tr").last
    expect(last).to_contain_text("tool_steps_exceeded")
    assert last.get_attribute("data-status") == "refused"


def test_another_teams_lead_cannot_see_the_run(page, live, world, people, tooled):
    tool_loop_run(live, world, tooled["openai"])
    log_in(page, "bruno")
    page.expected_errors.append("404")
    response = page.goto(f"/dashboard/runs/{RUN}/")
    assert response.status == 404


def test_the_playground_shows_the_tools_a_persona_runs(page, live, world, people, tooled):
    dashboard_team = Team.objects.get_or_create(name=DASHBOARD_TEAM)[0]
    ToolGrant.objects.create(team=dashboard_team, patterns=["builtin__current_time"])
    tooled["openai"].script(FakeReply(text="", tool_calls=[FakeToolCall("builtin__current_time", {})]),
                            FakeReply(text="It is noon."))
    log_in(page, "olive")
    page.goto("/dashboard/personas/tools-openai/")
    page.get_by_label("Message").fill("What time is it?")
    page.get_by_role("button", name="Send to tools-openai").click()
    output = page.locator("#playground-output")
    expect(output).to_contain_text("It is noon.")
    expect(output).to_contain_text("[Running the tool builtin__current_time… done in")
    [first, second] = Usage.objects.filter(endpoint="dashboard.playground").order_by("created_at")
    assert second.request_id == first.request_id + ".2" and first.run_id == second.run_id != ""
