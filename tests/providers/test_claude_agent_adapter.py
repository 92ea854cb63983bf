"""claude_agent specifics: what the (fake) Claude CLI was started with and received."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import aclosing

import pytest

from providers.adapters import get_adapter
from providers.adapters.claude_agent import error_kind_from_wire
from providers.types import ChatRequest, Message, ProviderError, Tool, ToolCall
from tests.fakes.claude_cli import FakeClaudeCLI
from tests.fakes.common import FakeReply, FakeToolCall, Fault

pytestmark = pytest.mark.asyncio

WEATHER = Tool(name="get_weather", description="Weather", parameters={"type": "object", "properties": {}})


@pytest.fixture(scope="module")
def _cli():
    cli = FakeClaudeCLI().start()
    yield cli
    cli.stop()


@pytest.fixture
def cli(_cli):
    _cli.reset()
    return _cli


def ask(text="Say hello.", system="You are terse.", **kwargs) -> ChatRequest:
    return ChatRequest(
        model="claude-sonnet-4-6",
        messages=[Message(role="system", content=system), Message(role="user", content=text)],
        **kwargs,
    )


def flag(argv: list[str], name: str):
    """The value of `name` in argv (either `--x v` or `--x=v`), or None if absent."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def user_prompt(run: dict) -> str:
    return next(m for m in run["stdin"] if m["type"] == "user")["message"]["content"]


async def test_by_default_the_cli_gets_no_tools_no_settings_and_a_throwaway_cwd(cli):
    await get_adapter(cli.adapter_config()).chat(ask())
    run = cli.requests[-1]
    argv = run["argv"]
    assert flag(argv, "--tools") == ""  # no built-in tools at all
    assert flag(argv, "--allowedTools") is None
    assert {"Bash", "Write", "Edit", "WebFetch"} <= set(flag(argv, "--disallowedTools").split(","))
    assert flag(argv, "--permission-mode") == "default"
    assert flag(argv, "--permission-prompt-tool") == "stdio"  # every prompt reaches our deny-all callback
    assert flag(argv, "--setting-sources") == ""  # no user/project settings (hooks, allow rules)
    assert "--strict-mcp-config" in argv
    assert flag(argv, "--max-turns") == "1"
    assert os.path.basename(run["cwd"]).startswith("ep-claude-")
    assert not os.path.exists(run["cwd"])  # removed after the run


async def test_allowed_tools_pass_only_when_the_route_step_asks(cli, tmp_path):
    request = ask(extra={"allowed_tools": ["Read", "Grep"], "permission_mode": "acceptEdits", "cwd": str(tmp_path)})
    await get_adapter(cli.adapter_config()).chat(request)
    argv = cli.requests[-1]["argv"]
    assert flag(argv, "--allowedTools") == "Read,Grep"
    assert flag(argv, "--tools") == "Grep,Read"
    assert flag(argv, "--permission-mode") == "acceptEdits"
    assert "Read" not in flag(argv, "--disallowedTools").split(",")
    assert "Bash" in flag(argv, "--disallowedTools").split(",")
    assert cli.requests[-1]["cwd"] == str(tmp_path)


async def test_system_prompt_model_and_prompt_reach_the_cli(cli):
    await get_adapter(cli.adapter_config()).chat(ask("What is 2+2?", system="Answer in French.", max_tokens=77))
    run = cli.requests[-1]
    assert flag(run["argv"], "--system-prompt") == "Answer in French."
    assert flag(run["argv"], "--model") == "claude-sonnet-4-6"
    assert user_prompt(run) == "What is 2+2?"
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS" in run["env_names"]


async def test_the_cli_reported_cost_and_cache_tokens_are_used(cli):
    cli.script(FakeReply(text="Hi.", input_tokens=1000, output_tokens=100, cached_tokens=400))
    result = await get_adapter(cli.adapter_config()).chat(ask())
    assert result.usage.reported_cost_usd == pytest.approx(1000 * 3e-6 + 100 * 15e-6)
    assert (result.usage.input_tokens, result.usage.cached_tokens, result.usage.output_tokens) == (1000, 400, 100)
    assert result.provider_request_id  # the CLI session id


async def test_the_credential_goes_in_env_only_and_never_into_argv_or_errors(cli):
    canary = "sk-ant-canary-0123456789"
    config = cli.adapter_config(credential=canary, base_url="http://127.0.0.1:9/anthropic")
    cli.script(FakeReply(), Fault("status", status=401, message="invalid x-api-key"))
    adapter = get_adapter(config)
    await adapter.chat(ask())
    run = cli.requests[-1]
    assert "ANTHROPIC_API_KEY" in run["env_names"]
    assert run["anthropic_base_url"] == "http://127.0.0.1:9/anthropic"
    assert all(canary not in arg for arg in run["argv"])
    with pytest.raises(ProviderError) as caught:
        await adapter.chat(ask())
    assert caught.value.kind == "auth" and canary not in str(caught.value)
    assert canary not in cli.log_text()


async def test_no_credential_means_the_cli_authenticates_itself(cli):
    await get_adapter(cli.adapter_config()).chat(ask())
    assert "ANTHROPIC_API_KEY" not in cli.requests[-1]["env_names"] or os.environ.get("ANTHROPIC_API_KEY")


async def test_closing_a_stream_early_ends_the_cli_process(cli):
    cli.script(FakeReply(text="word " * 200, chunk_size=5, chunk_delay=0.05))
    adapter = get_adapter(cli.adapter_config())
    started = time.monotonic()
    async with aclosing(adapter.stream(ask())) as events:
        async for event in events:
            if event.type == "delta":
                break
    pid = cli.requests[-1]["pid"]
    assert time.monotonic() - started < 4  # no 5 s grace wait: stdin EOF ends it at once
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_client_tools_are_deferred_by_the_hook_and_never_run(cli):
    cli.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Rome"}, id="toolu_1")]))
    result = await get_adapter(cli.adapter_config()).chat(ask("Weather?", tools=[WEATHER]))
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("toolu_1", "get_weather", '{"city": "Rome"}')]
    run = cli.requests[-1]
    hooks = [e for e in run["events"] if e["event"] == "hook"]
    assert hooks and hooks[0]["answer"]["hookSpecificOutput"]["permissionDecision"] == "defer"
    assert not [e for e in run["events"] if e["event"] == "permission"]  # the run stopped at the hook
    assert "--mcp-config" in run["argv"]  # the tools were offered through the in-process MCP server


async def test_tool_choice_none_offers_no_tools(cli):
    await get_adapter(cli.adapter_config()).chat(ask(tools=[WEATHER], tool_choice="none"))
    assert "--mcp-config" not in cli.requests[-1]["argv"]


async def test_earlier_turns_and_tool_results_are_rendered_into_the_prompt(cli):
    request = ask("Weather in Rome?", tools=[WEATHER])
    call = ToolCall(id="toolu_9", name="get_weather", arguments='{"city": "Rome"}')
    request.messages += [
        Message(role="assistant", content=None, tool_calls=[call]),
        Message(role="tool", tool_call_id="toolu_9", content='{"sky": "clear"}'),
    ]
    await get_adapter(cli.adapter_config()).chat(request)
    prompt = user_prompt(cli.requests[-1])
    assert "=== user ===\nWeather in Rome?" in prompt
    assert '=== assistant called tool get_weather (call id toolu_9) with arguments ===\n{"city": "Rome"}' in prompt
    assert '=== result of tool call toolu_9 ===\n{"sky": "clear"}' in prompt


async def test_a_missing_cli_is_unavailable(cli):
    config = cli.adapter_config(options={"cli_path": "/nonexistent/claude"})
    with pytest.raises(ProviderError) as caught:
        await get_adapter(config).chat(ask())
    assert caught.value.kind == "unavailable" and caught.value.retryable


async def test_concurrent_runs_pop_different_script_items(cli):
    cli.script(*(FakeReply(text=f"answer {i}") for i in range(4)))
    adapter = get_adapter(cli.adapter_config())
    results = await asyncio.gather(*(adapter.chat(ask()) for _ in range(4)))
    assert sorted(r.content for r in results) == [f"answer {i}" for i in range(4)]


@pytest.mark.parametrize(
    "text, status, kind",
    [
        ('API Error: 429 {"type":"error","error":{"type":"rate_limit_error"}}', None, "rate_limited"),
        ('API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}', None, "unavailable"),
        ("Prompt is too long", 400, "context_length"),
        ("Invalid API key · Please run /login", None, "auth"),
        ("Claude AI usage limit reached", 429, "rate_limited"),
        ("something odd", None, "bad_request"),
    ],
)
async def test_error_results_are_classified_by_status_and_text(text, status, kind):
    assert error_kind_from_wire(text, status)[0] == kind
