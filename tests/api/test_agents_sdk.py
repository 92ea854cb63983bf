"""The OpenAI Agents SDK, with its default model settings (the Responses API),
runs a tool-using agent against a persona of the live gateway; the persona is
routed to the wire-level OpenAI fake, scripted to call the tool first."""

from __future__ import annotations

import asyncio
import json

import pytest
from agents import Agent, OpenAIProvider, RunConfig, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from budgets.models import Usage
from gateway.models import StoredResponse
from personas.models import RouteStep
from providers.models import Provider
from tests.fakes.common import FakeReply, FakeToolCall


@pytest.fixture
def architect_on_the_fake(via_fake):
    """`architect` (a demo persona in the fixture world) answered by the OpenAI fake."""
    provider = Provider.objects.get(name="openai")
    for step in RouteStep.objects.filter(persona__slug="architect"):
        step.provider, step.model = provider, via_fake.model
        step.save()  # save(), not update(): the signal drops the gateway's config snapshot
    return via_fake


def test_an_agent_calls_its_tool_and_answers_through_a_persona(live, world, architect_on_the_fake):
    fake = architect_on_the_fake
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"})]),
                FakeReply(text="It is sunny in Oslo, 21 C."))
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city}, 21 C"

    set_tracing_disabled(True)  # the SDK would otherwise export traces to OpenAI
    client = AsyncOpenAI(base_url=live.url + "/v1", api_key=world.red_key, max_retries=0)
    config = RunConfig(model_provider=OpenAIProvider(openai_client=client, use_responses=True), tracing_disabled=True)
    agent = Agent(name="forecaster", instructions="Use your tools.", model="architect", tools=[get_weather])

    result = asyncio.run(Runner.run(agent, "What is the weather in Oslo?", run_config=config))

    assert asked == ["Oslo"]
    assert result.final_output == "It is sunny in Oslo, 21 C."
    first, second = (r["body"] for r in fake.requests)
    tool = first["tools"][0]["function"]
    assert tool["name"] == "get_weather" and list(tool["parameters"]["properties"]) == ["city"]
    assert tool.get("strict") is True  # the SDK's strict function schema is carried to OpenAI
    # the persona's own system prompt first, then the agent's instructions
    assert [m["role"] for m in first["messages"]] == ["system", "system", "user"]
    assert first["messages"][1]["content"] == "Use your tools."
    results = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in results] == ["sunny in Oslo, 21 C"]
    call_id = next(m for m in second["messages"] if m.get("tool_calls"))["tool_calls"][0]["id"]
    assert results[0]["tool_call_id"] == call_id
    rows = Usage.objects.order_by("created_at")
    assert [(r.endpoint, r.persona, r.provider, r.status) for r in rows] == [
        ("v1.responses", "architect", "openai", "ok")] * 2
    assert StoredResponse.objects.count() == 2  # store defaults to true, as on OpenAI
    assert json.dumps(first).count("Oslo") == 1  # only the question, asked once
