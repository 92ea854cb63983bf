"""exec: only operator-allow-listed commands, off by default, no shell, capped."""

from __future__ import annotations

import pytest

from accounts.models import Team
from tools.catalog import builtin_server

from .builtin_support import call, granted_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def team(transactional_db):
    return Team.objects.create(name="red")


async def allow(**exec_options):
    server = await builtin_server()
    server.options = {"exec": exec_options}
    await server.asave()


COMMANDS = {
    "hello": ["echo", "hello"],
    "say": {"argv": ["echo"], "allow_args": True},
    "ls": {"argv": ["ls"], "allow_args": True, "allow_options": True},
    "environment": ["env"],
    "nap": ["sleep", "5"],
    "noisy": ["seq", "1", "100000"],
    "missing": ["/no/such/program"],
}


async def test_it_is_off_by_default(team):
    key = await granted_key(team)
    result = await call(key, "exec", {"command": "hello"})
    assert result.error_code == "exec_disabled"


async def test_an_allowed_command_runs_without_a_shell(team):
    key = await granted_key(team)
    await allow(enabled=True, commands=COMMANDS)
    result = await call(key, "exec", {"command": "hello"})
    assert not result.is_error and result.structured["output"] == "hello\n"
    said = await call(key, "exec", {"command": "say", "args": ["$HOME", "; rm -rf /", "*"]})
    assert said.structured["output"] == "$HOME ; rm -rf / *\n"  # no shell: nothing interpreted


async def test_commands_arguments_and_options_outside_the_list_are_refused(team):
    key = await granted_key(team)
    await allow(enabled=True, commands=COMMANDS)
    unknown = await call(key, "exec", {"command": "rm"})
    assert unknown.error_code == "command_not_allowed" and "hello" in unknown.content
    assert (await call(key, "exec", {"command": "hello", "args": ["x"]})).error_code == "invalid_arguments"
    option = await call(key, "exec", {"command": "say", "args": ["-e", "x"]})
    assert option.error_code == "invalid_arguments" and "options" in option.content
    assert not (await call(key, "exec", {"command": "ls", "args": ["-a", "/"]})).is_error


async def test_the_environment_is_minimal(team, monkeypatch):
    monkeypatch.setenv("EP_SECRET_FOR_TEST", "do-not-leak")
    key = await granted_key(team)
    await allow(enabled=True, commands=COMMANDS)
    output = (await call(key, "exec", {"command": "environment"})).structured["output"]
    assert "do-not-leak" not in output and "SECRET_KEY" not in output
    assert {line.split("=")[0] for line in output.splitlines()} <= {"PATH", "LANG", "LC_ALL", "PWD"}


async def test_time_and_output_are_capped_and_failures_are_tool_errors(team):
    key = await granted_key(team)
    await allow(enabled=True, commands=COMMANDS, timeout_seconds=0.5, max_output_bytes=1000)
    nap = await call(key, "exec", {"command": "nap"})
    assert nap.error_code == "tool_timeout" and "0.5 s" in nap.content
    noisy = await call(key, "exec", {"command": "noisy"})
    assert noisy.structured["truncated"] is True and len(noisy.structured["output"]) == 1000
    missing = await call(key, "exec", {"command": "missing"})
    assert missing.error_code == "exec_failed"


async def test_a_nonzero_exit_is_reported_with_its_code(team):
    key = await granted_key(team)
    await allow(enabled=True, commands={"false": ["false"]})
    result = await call(key, "exec", {"command": "false"})
    assert result.is_error and result.error_code == "nonzero_exit" and data_code(result) == 1


def data_code(result) -> int:
    return result.structured["exit_code"]


