"""The one door to tool execution (tools/registry.py): permission, schema, log."""

import json

import pytest

from accounts.models import ApiKey, Team
from accounts.snapshot import load_key
from tools import registry
from tools.catalog import builtin_server
from tools.models import ToolCallLog, ToolGrant
from tools.types import ToolContext

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def key_info():
    team = Team.objects.create(name="tooling")
    key, _ = ApiKey.issue(team=team, name="agents")
    return load_key(key.key_hash)


async def test_a_team_without_a_grant_sees_no_tool_and_calls_none(key_info):
    await builtin_server()
    assert await registry.available_tools(key_info) == []
    result = await registry.call_tool("builtin__current_time", {}, ToolContext(key=key_info))
    assert result.is_error and result.error_code == "unknown_tool"
    row = await ToolCallLog.objects.aget()
    assert (row.server, row.tool, row.status) == ("builtin", "current_time", "refused")


async def test_a_granted_tool_runs_and_is_logged_and_bad_arguments_are_refused(key_info):
    await builtin_server()
    await ToolGrant.objects.acreate(team_id=key_info.team_id, patterns=["builtin__*"])
    names = {s.qualified_name for s in await registry.available_tools(key_info)}
    assert {"builtin__current_time", "builtin__run_cost"} <= names
    ctx = ToolContext(key=key_info, run_id="run-1")
    result = await registry.call_tool("builtin__run_cost", "{}", ctx)
    assert not result.is_error and json.loads(result.content)["model_calls"] == 0
    refused = await registry.call_tool("builtin__run_cost", '{"run_id": 5}', ctx)
    assert refused.error_code == "invalid_arguments" and "run_id" in refused.content
    assert [r.status async for r in ToolCallLog.objects.order_by("at")] == ["ok", "refused"]


async def test_a_key_list_narrows_its_team_list(key_info):
    await builtin_server()
    await ToolGrant.objects.acreate(team_id=key_info.team_id, patterns=["builtin__*"])
    await ToolGrant.objects.acreate(api_key_id=key_info.id, patterns=["builtin__current_time"])
    assert [s.qualified_name for s in await registry.available_tools(key_info)] == ["builtin__current_time"]


async def test_a_name_with_control_characters_is_refused_and_logged_without_them(key_info):
    await builtin_server()
    await ToolGrant.objects.acreate(team_id=key_info.team_id, patterns=["builtin__*"])
    result = await registry.call_tool("builtin__current\x00time\n", {}, ToolContext(key=key_info))
    assert result.error_code == "unknown_tool"
    row = await ToolCallLog.objects.aget()
    assert (row.server, row.tool, row.status) == ("builtin", "currenttime", "refused")
    assert "\x00" not in row.error_message
