"""Issue 19's whole path: operators' MCP servers (the fake over streamable HTTP
and the fake over stdio, registered, refreshed and approved like any) whose
tools a persona uses in a server-side loop, on the OpenAI, Anthropic and Gemini
fakes emitting the tool calls, through the real SDKs against the live gateway."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import openai
import pytest

from tests.api.tool_loop_support import (
    KINDS,
    _in_a_thread,
    fakes_running,
    rows,
    sdk,
    tool_rows,
    tooled_persona,
)
from tests.fakes.common import FakeReply, FakeToolCall
from tests.fakes.mcp_http_server import FakeMCPHttpServer
from tests.tools.mcp_support import http_server_row, stdio_server_row
from tools.catalog import approve_pending, refresh_server
from tools.models import PersonaTools, Tool, ToolGrant
from tools.servers.mcp_remote import close_sessions

ASK = [{"role": "user", "content": "Add 2 and 40, and tell me the server's greeting."}]


@pytest.fixture(scope="module")
def fakes():
    yield from fakes_running()


@pytest.fixture(scope="module")
def mcp_http():
    server = FakeMCPHttpServer().start()
    yield server
    server.stop()


def _registered(mcp_http) -> None:
    """Both fake MCP servers registered, listed and approved, as an operator would."""
    http_server_row(mcp_http.url, timeout_seconds=1.0)
    stdio_server_row(env={"GREETING": "hello from stdio"})

    async def refresh_and_approve() -> None:
        from tools.models import ToolServer

        try:
            async for server in ToolServer.objects.filter(kind__in=["http", "stdio"]):
                for tool in await refresh_server(server):
                    await asyncio.to_thread(approve_pending, tool)
        finally:
            await close_sessions()

    _in_a_thread(lambda: asyncio.run(refresh_and_approve()))


@pytest.fixture
def mcp_tooled(fakes, mcp_http, world):
    mcp_http.reset()
    _registered(mcp_http)
    ToolGrant.objects.create(team=world.red, patterns=["fakehttp__*", "fakestdio__*"])
    for kind, fake in fakes.items():
        fake.reset()
        persona = tooled_persona(kind, fake, slug=f"mcp-{kind}")
        persona.tool_settings.tools.set(Tool.objects.filter(server__name__in=["fakehttp", "fakestdio"]))
    return fakes


def _add_and_greet(fake, answer: str) -> None:
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("fakehttp__add", {"a": 2, "b": 40}),
                                               FakeToolCall("fakestdio__env", {"name": "GREETING"})]),
                FakeReply(text=answer))


@pytest.mark.parametrize("kind", KINDS)
def test_a_persona_runs_tools_of_an_http_and_a_stdio_mcp_server_on_every_provider(live, world, mcp_tooled,
                                                                                   mcp_http, kind):
    fake = mcp_tooled[kind]
    _add_and_greet(fake, "42, and the server says hello.")
    raw = sdk(live, world.red_key).chat.completions.with_raw_response.create(model=f"mcp-{kind}", messages=ASK)
    assert raw.parse().choices[0].message.content == "42, and the server says hello."
    run_id = raw.headers["x-ep-run-id"]
    assert [r.status for r in rows(run_id)] == ["ok", "ok"]
    assert [(t.server, t.tool, t.status, t.source) for t in tool_rows(run_id)] == [
        ("fakehttp", "add", "ok", "loop"), ("fakestdio", "env", "ok", "loop")]
    # The HTTP server ran the call; both results went back to the model on its second call.
    assert ["add"] == [name for name, _ in mcp_http.calls]
    offered, answered = (json.dumps(r["body"]) for r in fake.requests)
    assert "fakehttp__add" in offered and "fakestdio__env" in offered
    assert "42" in answered and "hello from stdio" in answered and "hello from stdio" not in offered


def test_a_tool_that_outlives_its_server_timeout_is_a_tool_error_the_model_reads(live, world, mcp_tooled):
    fake = mcp_tooled["anthropic"]
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("fakehttp__slow", {"seconds": 5})]),
                FakeReply(text="The slow tool did not answer in time."))
    client = anthropic.Anthropic(base_url=live.url, api_key=world.red_key, max_retries=0)
    raw = client.messages.with_raw_response.create(model="mcp-anthropic", max_tokens=100, messages=ASK)
    assert raw.status_code == 200
    assert raw.parse().content[0].text == "The slow tool did not answer in time."
    [logged] = tool_rows(raw.headers["x-ep-run-id"])
    assert (logged.tool, logged.status, logged.error_code) == ("slow", "timeout", "tool_timeout")
    assert 900 <= logged.duration_ms < 4000  # cut at the server's 1 s, not the tool's 5 s
    results = [b for m in fake.requests[1]["body"]["messages"] if isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert len(results) == 1 and results[0].get("is_error") is True


def test_tools_that_spend_the_loops_tool_time_end_it_with_a_clear_error(live, world, mcp_tooled, mcp_http):
    PersonaTools.objects.filter(persona__slug="mcp-openai").update(max_tool_seconds=0.5)
    fake = mcp_tooled["openai"]
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("fakehttp__slow", {"seconds": 0.7})]),
                FakeReply(text="", tool_calls=[FakeToolCall("fakehttp__add", {"a": 1, "b": 1})]),
                FakeReply(text="never reached"))
    raw = sdk(live, world.red_key).chat.completions.with_raw_response
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        raw.create(model="mcp-openai", messages=ASK)
    assert refused.value.body["code"] == "tool_time_exceeded"
    # The slow call was cut at the time left (0.5 s); the model read that and asked for
    # another tool, which the spent tool time refused: the add never ran.
    assert [(t.tool, t.status) for t in tool_rows(_run_of_last_request())] == [("slow", "timeout")]
    assert len(fake.requests) == 2 and [name for name, _ in mcp_http.calls] == ["slow"]


def _run_of_last_request() -> str:
    from budgets.models import Usage

    return Usage.objects.exclude(run_id="").latest("created_at").run_id


def test_the_runs_api_lists_the_runs_tool_calls_to_its_team_only(live, world, mcp_tooled):
    _add_and_greet(mcp_tooled["gemini"], "Done.")
    raw = sdk(live, world.red_key).chat.completions.with_raw_response.create(model="mcp-gemini", messages=ASK)
    run_id = raw.headers["x-ep-run-id"]
    run = httpx.get(f"{live.url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {world.red_key}"}).json()
    assert run["request_count"] == 2
    assert [(c["name"], c["status"], c["source"]) for c in run["tool_calls"]] == [
        ("fakehttp__add", "ok", "loop"), ("fakestdio__env", "ok", "loop")]
    assert {c["request_id"] for c in run["tool_calls"]} == {raw.headers["x-request-id"]}
    other = httpx.get(f"{live.url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {world.blue_key}"})
    assert other.status_code == 404


def _two_slow_calls(fake) -> None:
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("fakehttp__slow", {"seconds": 0.6}),
                                               FakeToolCall("fakehttp__add", {"a": 2, "b": 40}),
                                               FakeToolCall("fakehttp__slow", {"seconds": 0.6})]),
                FakeReply(text="Both slept."))


def _overlapping(rows) -> bool:
    from datetime import timedelta

    first, *others = rows
    return all(other.at < first.at + timedelta(milliseconds=first.duration_ms) for other in others)


def test_the_tool_calls_of_one_turn_run_at_once_and_go_back_in_the_models_order(live, world, mcp_tooled):
    fake = mcp_tooled["openai"]
    _two_slow_calls(fake)
    raw = sdk(live, world.red_key).chat.completions.with_raw_response.create(model="mcp-openai", messages=ASK)
    assert raw.parse().choices[0].message.content == "Both slept."
    logged = tool_rows(raw.headers["x-ep-run-id"])
    assert [(t.tool, t.status) for t in logged] == [("slow", "ok"), ("add", "ok"), ("slow", "ok")]
    assert _overlapping(logged)  # each began before the first had ended
    results = [m for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    calls = fake.requests[1]["body"]["messages"][-4]["tool_calls"]
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls] and "42" in results[1]["content"]


def test_parallel_tool_calls_false_runs_them_one_after_another(live, world, mcp_tooled):
    fake = mcp_tooled["openai"]
    _two_slow_calls(fake)
    raw = sdk(live, world.red_key).chat.completions.with_raw_response.create(
        model="mcp-openai", messages=ASK, parallel_tool_calls=False)
    assert raw.parse().choices[0].message.content == "Both slept."
    logged = tool_rows(raw.headers["x-ep-run-id"])
    assert [t.tool for t in logged] == ["slow", "add", "slow"] and not _overlapping(logged)
