"""/mcp: the platform as an MCP server, driven by the real mcp SDK client over
streamable HTTP against the live gateway."""

from __future__ import annotations

import asyncio

import httpx
import httpx2
import pytest
from asgiref.sync import async_to_sync
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from budgets.models import Usage
from tools.catalog import builtin_server
from tools.models import ToolCallLog, ToolGrant


@pytest.fixture
def granted(world):
    async_to_sync(builtin_server)()
    ToolGrant.objects.create(team=world.red, patterns=["builtin__*"])
    return world


def _transport(live, key: str, **headers: str):
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}", **headers}, timeout=30)
    return streamable_http_client(live.url + "/mcp", http_client=client)


def with_client(live, key: str, work, *, mode: str = "auto", **headers: str):
    """Run `work(client)` inside an MCP session (the SDK's high-level Client)."""

    async def main():
        async with Client(_transport(live, key, **headers), mode=mode) as client:
            return await work(client)

    return asyncio.run(main())


def mcp_rows() -> list[Usage]:
    return list(Usage.objects.filter(endpoint="mcp").order_by("created_at", "id"))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_a_client_lists_the_tools_its_key_may_use_and_calls_one(live, granted, mode):
    async def work(client):
        listed = await client.list_tools()
        called = await client.call_tool("builtin__current_time", {})
        return listed, called

    listed, called = with_client(live, granted.red_key, work, mode=mode)
    names = {tool.name for tool in listed.tools}
    assert {"builtin__current_time", "builtin__run_cost"} <= names
    schema = next(t.input_schema for t in listed.tools if t.name == "builtin__run_cost")
    assert schema["properties"]["run_id"]["type"] == "string"
    assert not called.is_error and called.content[0].text.startswith("20")
    log = ToolCallLog.objects.get()
    assert (log.source, log.tool, log.status, log.team_id) == ("mcp", "current_time", "ok", granted.red.id)
    rows = mcp_rows()
    assert rows and all(r.team_id == granted.red.id and r.status == "ok" for r in rows)


def test_each_http_request_leaves_exactly_one_usage_row(live, granted):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Authorization": f"Bearer {granted.red_key}", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    response = httpx.post(live.url + "/mcp", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert any(t["name"] == "builtin__current_time" for t in response.json()["result"]["tools"])
    rows = mcp_rows()
    assert len(rows) == 1 and rows[0].request_id == response.headers["X-Request-ID"]
    # A protocol-level refusal by the SDK (it answers JSON, the client accepts only HTML) is a row too.
    refused = httpx.post(live.url + "/mcp", json=body, headers={**headers, "Accept": "text/html"})
    assert refused.status_code == 406
    assert [(r.status, r.http_status) for r in mcp_rows()] == [("ok", 200), ("refused", 406)]


def test_a_forbidden_tool_reads_exactly_like_one_that_does_not_exist(live, granted):
    ToolGrant.objects.create(api_key_id=granted_key_id(granted), patterns=["builtin__current_time"])

    async def work(client):
        listed = await client.list_tools()
        forbidden = await client.call_tool("builtin__run_cost", {"run_id": "r"})
        missing = await client.call_tool("builtin__no_such_tool", {})
        return listed, forbidden, missing

    listed, forbidden, missing = with_client(live, granted.red_key, work)
    assert [t.name for t in listed.tools] == ["builtin__current_time"]
    assert forbidden.is_error and missing.is_error
    assert forbidden.content[0].text.replace("run_cost", "X") == missing.content[0].text.replace("no_such_tool", "X")
    assert forbidden.meta == missing.meta and forbidden.meta["ep/error_code"] == "unknown_tool"


def granted_key_id(world) -> int:
    from accounts.models import ApiKey

    return ApiKey.objects.get(team=world.red, name="red agents").id


def test_a_missing_or_invalid_key_is_a_401_envelope_and_no_row(live, granted):
    for headers in ({}, {"Authorization": "Bearer ep-not-a-key"}, {"x-api-key": granted.red_key}):
        response = httpx.post(live.url + "/mcp", json={}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]
    assert mcp_rows() == []


def test_a_key_without_any_tool_permission_is_a_403_envelope_with_its_row(live, granted):
    response = httpx.post(live.url + "/mcp", json={}, headers={"Authorization": f"Bearer {granted.blue_key}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_tool_permission"
    [row] = mcp_rows()
    assert (row.team_id, row.status, row.http_status) == (granted.blue.id, "refused", 403)


def test_the_sdk_client_cannot_connect_with_a_bad_key(live, granted):
    async def work(client):
        return await client.list_tools()

    with pytest.raises(BaseException) as raised:
        with_client(live, "ep-not-a-key", work)
    assert "Server returned an error response" in repr(raised.value)
    assert mcp_rows() == []


def test_get_and_delete_are_405_with_their_row(live, granted):
    auth = {"Authorization": f"Bearer {granted.red_key}"}
    assert httpx.get(live.url + "/mcp", headers=auth).status_code == 405
    response = httpx.delete(live.url + "/mcp", headers=auth)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert [r.http_status for r in mcp_rows()] == [405, 405]


def test_ask_persona_through_mcp_is_billed_to_the_run(live, granted):
    async def work(client):
        return await client.call_tool("builtin__ask_persona", {"persona": "architect", "question": "Which DB?"})

    result = with_client(live, granted.red_key, work, **{"X-EP-Run-Id": "run-mcp-1"})
    assert not result.is_error, result.content[0].text
    assert result.content[0].text
    row = Usage.objects.get(endpoint="tool.ask_persona")
    assert (row.run_id, row.persona, row.team_id, row.status) == ("run-mcp-1", "architect", granted.red.id, "ok")
    assert row.cost_usd > 0
    log = ToolCallLog.objects.get(tool="ask_persona")
    assert (log.run_id, log.source, log.status) == ("run-mcp-1", "mcp", "ok")
    assert result.structured_content == {"persona": "architect", "answer": result.content[0].text}
    assert all(r.run_id == "" and r.cost_usd == 0 for r in mcp_rows())  # the question carries the cost


def test_a_key_in_the_url_and_a_malformed_run_id_are_400_envelopes_with_their_rows(live, granted):
    auth = {"Authorization": f"Bearer {granted.red_key}"}
    leaked = httpx.post(live.url + "/mcp?api_key=" + granted.red_key, json={}, headers=auth)
    assert leaked.status_code == 400 and leaked.json()["error"]["code"] == "key_in_query_string"
    bad_run = httpx.post(live.url + "/mcp", json={}, headers={**auth, "X-EP-Run-Id": "run id with spaces/" + "x" * 200})
    assert bad_run.status_code == 400 and bad_run.json()["error"]["code"] == "invalid_run_id"
    assert [(r.status, r.http_status, r.error_code) for r in mcp_rows()] == [
        ("refused", 400, "key_in_query_string"), ("refused", 400, "invalid_run_id")]


def test_x_persona_narrows_the_tools_to_the_personas_within_the_keys(live, granted):
    from personas.models import Persona
    from tools.models import PersonaTools, Tool

    settings = PersonaTools.objects.create(persona=Persona.objects.get(slug="reviewer"))
    settings.tools.set(Tool.objects.filter(name__in=["text_diff", "calculator"]))

    async def work(client):
        return await client.list_tools()

    listed = with_client(live, granted.red_key, work, **{"X-Persona": "reviewer"})
    assert sorted(t.name for t in listed.tools) == ["builtin__calculator", "builtin__text_diff"]


def test_an_unknown_x_persona_is_a_404_envelope(live, granted):
    response = httpx.post(live.url + "/mcp", json={}, headers={"Authorization": f"Bearer {granted.red_key}",
                                                               "X-Persona": "nobody"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_persona"
    assert [(r.status, r.http_status) for r in mcp_rows()] == [("refused", 404)]


def test_a_host_outside_allowed_hosts_is_refused_like_the_rest_of_the_site(live, granted):
    response = httpx.post(live.url + "/mcp", json={}, headers={"Authorization": f"Bearer {granted.red_key}",
                                                               "Host": "evil.example"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"
    assert mcp_rows() == []
