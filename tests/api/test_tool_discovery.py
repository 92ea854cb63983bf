"""GET /api/v1/tools: what this key (and a persona) may use, as OpenAI function tools."""

from __future__ import annotations

import httpx
import pytest
from asgiref.sync import async_to_sync

from accounts.models import ApiKey
from budgets.models import Usage
from personas.models import Persona
from tools.catalog import builtin_server
from tools.models import PersonaTools, Tool, ToolGrant


@pytest.fixture
def tooled(world):
    async_to_sync(builtin_server)()
    return world


def get(live, key: str, **params) -> httpx.Response:
    return httpx.get(live.url + "/api/v1/tools", params=params, headers={"Authorization": f"Bearer {key}"})


def test_a_team_without_a_grant_sees_an_empty_list_and_leaves_one_row(live, tooled):
    response = get(live, tooled.red_key)
    assert response.status_code == 200 and response.json() == {"object": "list", "persona": None, "data": []}
    [row] = Usage.objects.filter(request_id=response.headers["X-Request-ID"])
    assert (row.endpoint, row.status, row.team_id) == ("tools", "ok", tooled.red.id)
    assert Usage.objects.count() == 1


def test_granted_tools_come_as_function_definitions_with_their_schemas(live, tooled):
    ToolGrant.objects.create(team=tooled.red, patterns=["builtin__*"])
    data = get(live, tooled.red_key).json()["data"]
    calculator = next(t for t in data if t["function"]["name"] == "builtin__calculator")
    assert (calculator["type"], calculator["server"], calculator["name"]) == ("function", "builtin", "calculator")
    assert calculator["function"]["parameters"]["required"] == ["expression"]
    assert calculator["function"]["description"]
    assert len(data) == Tool.objects.filter(server__name="builtin").count() >= 10
    assert get(live, tooled.blue_key).json()["data"] == []  # blue has no grant


def test_a_persona_narrows_to_its_tools_within_the_keys_grants(live, tooled):
    ToolGrant.objects.create(team=tooled.red, patterns=["builtin__*"])
    key = ApiKey.objects.get(team=tooled.red, name="red agents")
    ToolGrant.objects.create(api_key=key, patterns=["builtin__current_time", "builtin__calculator"])
    settings = PersonaTools.objects.create(persona=Persona.objects.get(slug="architect"))
    settings.tools.set(Tool.objects.filter(name__in=["current_time", "run_cost"]))
    body = get(live, tooled.red_key, persona="architect").json()
    assert body["persona"] == "architect"
    assert [t["function"]["name"] for t in body["data"]] == ["builtin__current_time"]
    assert get(live, tooled.red_key, persona="reviewer").json()["data"] == []  # no tool settings: none
    admin = get(live, tooled.admin_key, persona="architect").json()["data"]  # the team's grant alone
    assert [t["function"]["name"] for t in admin] == ["builtin__current_time", "builtin__run_cost"]


def test_an_unknown_persona_is_a_404_envelope_with_its_row(live, tooled):
    response = get(live, tooled.red_key, persona="nobody")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unknown_persona", "persona") and "architect" in error["message"]
    [row] = Usage.objects.all()
    assert (row.status, row.http_status) == ("refused", 404)


def test_a_bad_key_is_a_401(live, tooled):
    response = get(live, "ep-nope")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
