"""Team isolation, table-driven: every dashboard route (tests/security/
test_route_inventory.py names them all) with every role, and every API route
with another team's key, an admin key and no key. Only the combinations the
rules allow succeed; another team's objects do not exist for you."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, AuditEntry, Team
from budgets.models import Alert, Budget, Usage
from gateway.models import Batch, BatchFile, StoredResponse
from personas.models import Persona, RouteStep
from providers.models import Model
from tests.dashboard.conftest import client_for
from tests.security.test_route_inventory import DASHBOARD_RULES
from tools.models import Document, Tool, ToolServer

ROLES = {"login": {"max", "rita", "bruno", "olive", "ada"}, "costs": {"rita", "bruno", "olive", "ada"},
         "operator": {"olive", "ada"}, "admin": {"ada"}}
ACTORS = ["anonymous", "max", "rita", "bruno", "olive", "ada"]
# Routes that only take POST (the rest are walked with GET).
POST_ONLY = {"logout", "dashboard:key_revoke", "dashboard:team_create", "dashboard:membership_set",
             "dashboard:user_invite", "dashboard:user_reinvite",
             "personas:import", "personas:step_add", "personas:step_update", "personas:step_move",
             "personas:step_remove", "personas:playground", "providers:model_add", "providers:model_delete",
             "providers:test", "providers:catalog_refresh", "budgets:alert_ack", "documents:delete",
             "tools:server_refresh", "tools:tool_approve", "tools:tool_settings"}


@pytest.fixture
def objects(world):
    """One of everything a dashboard URL can name, the money on team blue."""
    budget = Budget.objects.create(name="blue monthly", scope="team", team=world.blue, limit_usd=Decimal(10))
    alert = Alert.objects.create(budget=budget, threshold=80, period_start=timezone.now(), message="blue at 80%")
    row = Usage.objects.create(request_id="req_blue_1", team=world.blue, persona="architect", provider="demo",
                               model="demo", cost_usd=Decimal("1.5"), run_id="run-blue-1")
    tool_server = ToolServer.objects.create(name="remote", kind="http", url="http://127.0.0.1:9/mcp")
    tool = Tool.objects.create(server=tool_server, name="echo")
    return {"tool": tool,
            "step": Persona.objects.get(slug="architect").steps.get(), "budget": budget, "alert": alert,
            "row": row, "model": Model.objects.get(provider=world.demo, name="demo"),
            "key": ApiKey.objects.get(name="blue agents"),
            "document": Document.objects.create(team=world.blue, title="blue runbook", content="x")}


def url_of(name: str, o: dict) -> str:
    args = {
        "dashboard:key_revoke": [o["key"].pk], "dashboard:user_reinvite": [o["key"].team.memberships.first().user_id],
        "personas:edit": ["architect"], "personas:step_add": ["architect"],
        "personas:step_update": ["architect", o["step"].pk], "personas:step_move": ["architect", o["step"].pk, "down"],
        "personas:step_remove": ["architect", o["step"].pk], "personas:playground": ["architect"],
        "providers:edit": ["demo"], "providers:model_add": ["demo"], "providers:model_delete": ["demo", o["model"].pk],
        "providers:model_edit": ["demo", o["model"].pk], "providers:catalog_refresh": ["demo"],
        "providers:test": ["demo"], "budgets:edit": [o["budget"].pk], "budgets:alert_ack": [o["alert"].pk],
        "budgets:usage_detail": [o["row"].pk], "budgets:run": [o["row"].run_id],
        "tools:server": ["remote"], "tools:server_refresh": ["remote"], "tools:persona": ["architect"],
        "tools:tool_approve": ["remote", o["tool"].pk], "tools:tool_settings": ["remote", o["tool"].pk],
        "documents:delete": [o["document"].pk],
    }.get(name, [])
    return reverse(name, args=args)


def state() -> tuple:
    """What a refused POST must leave untouched."""
    return (ApiKey.objects.filter(revoked_at__isnull=True).count(), Team.objects.count(),
            RouteStep.objects.count(), Model.objects.count(), Alert.objects.filter(acknowledged_at=None).count(),
            AuditEntry.objects.count(), list(Tool.objects.values_list("approved", "enabled")),
            Document.objects.count())


GUARDED = [name for name, rule in DASHBOARD_RULES.items() if rule in ROLES and name != "logout"]


def outcomes_of(name: str, url: str, clients: dict) -> dict[str, int]:
    allowed = ROLES[DASHBOARD_RULES[name]]
    outcomes = {}
    for actor, client in clients.items():
        if name in POST_ONLY and actor in allowed:
            continue  # allowed writes are the dashboard tests' business; here: nobody else gets through
        response = client.post(url) if name in POST_ONLY else client.get(url)
        outcomes[actor] = response.status_code
        if actor == "anonymous":
            assert response["Location"].startswith("/login/"), name
    return outcomes


@pytest.mark.django_db(transaction=True)  # the async views (playground, test) read from another thread
def test_each_dashboard_route_lets_in_only_its_roles(people, objects):
    clients = {actor: Client() if actor == "anonymous" else client_for(getattr(people, actor)) for actor in ACTORS}
    before = state()
    wrong = {}
    for name in GUARDED:
        allowed = ROLES[DASHBOARD_RULES[name]]
        outcomes = outcomes_of(name, url_of(name, objects), clients)
        expected = {a: (302 if a == "anonymous" else 200 if a in allowed else 403) for a in outcomes}
        if name in ("budgets:usage_detail", "budgets:run"):
            expected["rita"] = 404  # a lead of red: blue's request (and run) does not exist for her
        if outcomes != expected:
            wrong[name] = (outcomes, expected)
    assert not wrong, wrong
    assert state() == before, "a refused POST changed something"
    assert len(GUARDED) >= 29  # every guarded route of the inventory was walked


def test_a_team_lead_cannot_acknowledge_another_teams_alert(people, objects):
    assert client_for(people.rita).post(url_of("budgets:alert_ack", objects)).status_code == 404
    assert Alert.objects.get().acknowledged_at is None
    assert client_for(people.bruno).post(url_of("budgets:alert_ack", objects)).status_code == 302
    assert Alert.objects.get().acknowledged_at is not None


def test_an_alert_acknowledgement_does_not_redirect_off_site(people, objects):
    response = client_for(people.bruno).post(url_of("budgets:alert_ack", objects), {"next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == reverse("budgets:list")


# -- the API, on the live server --------------------------------------------------------------

CHAT = {
    "POST /v1/chat/completions": {"model": "architect", "messages": [{"role": "user", "content": "hi"}]},
    "POST /api/v1/chat": {"persona": "architect", "messages": [{"role": "user", "content": "hi"}]},
    "POST /v1/messages": {"model": "architect", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
    "POST /v1/messages/count_tokens": {"model": "architect", "messages": [{"role": "user", "content": "hi"}]},
    "GET /v1/models": None,
    "GET /api/v1/tools": None,
    "POST /v1/responses": {"model": "architect", "input": "hi", "store": False},
}
# Stored responses are the team's conversations: no other team reads them, admin keys included.
STORED = ("GET /v1/responses/resp_blue", "GET /v1/responses/resp_blue/input_items",
          "DELETE /v1/responses/resp_blue")
# So are batch files and batches (the DELETE last: blue's own call deletes it).
BATCH_STORED = ("GET /v1/files/file-blue", "GET /v1/files/file-blue/content", "GET /v1/batches/batch_blue",
                "POST /v1/batches/batch_blue/cancel", "DELETE /v1/files/file-blue")


def call(live, label: str, key: str | None, body=None, **params) -> httpx.Response:
    method, path = label.split(" ", 1)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, live.url + path, headers=headers, json=body, params=params, timeout=30)


def test_each_api_route_answers_only_the_keys_its_rule_allows(live, world):
    for team, run in ((world.red, "run-red"), (world.blue, "run-blue")):
        Usage.objects.create(request_id=f"req_{run}", team=team, persona="architect", provider="demo", model="demo",
                             cost_usd=Decimal("0.5"), run_id=run, step="plan")
    keys = {"none": None, "red": world.red_key, "blue": world.blue_key, "admin": world.admin_key}
    table = {}
    for label, body in CHAT.items():
        table[label] = {who: call(live, label, key, body).status_code for who, key in keys.items()}
    table["GET /api/v1/runs/run-blue"] = {who: call(live, "GET /api/v1/runs/run-blue", key).status_code
                                          for who, key in keys.items()}
    StoredResponse.objects.create(id="resp_blue", team=world.blue, body={"id": "resp_blue", "output": []})
    for label in STORED:  # the DELETE last: blue's own call deletes it
        table[label] = {who: call(live, label, key).status_code for who, key in keys.items()}
    BatchFile.objects.create(id="file-blue", team=world.blue, purpose="batch", filename="b.jsonl", bytes=2,
                             content="{}")
    Batch.objects.create(id="batch_blue", team=world.blue, endpoint="/v1/chat/completions",
                         input_file_id="file-blue", expires_at=timezone.now())
    for label in BATCH_STORED:
        table[label] = {who: call(live, label, key).status_code for who, key in keys.items()}
    table["GET /metrics"] = {who: call(live, "GET /metrics", key).status_code for who, key in keys.items()}
    table["GET /health?deep"] = {who: call(live, "GET /health", key, deep="true").status_code
                                 for who, key in keys.items()}
    table["GET /capabilities"] = {who: call(live, "GET /capabilities", key).status_code for who, key in keys.items()}
    expected = {label: {"none": 401, "red": 200, "blue": 200, "admin": 200} for label in CHAT}
    expected["GET /api/v1/runs/run-blue"] = {"none": 401, "red": 404, "blue": 200, "admin": 200}
    expected.update({label: {"none": 401, "red": 404, "blue": 200, "admin": 404} for label in STORED + BATCH_STORED})
    expected["GET /metrics"] = {"none": 401, "red": 403, "blue": 403, "admin": 200}
    expected["GET /health?deep"] = {"none": 401, "red": 403, "blue": 403, "admin": 200}
    expected["GET /capabilities"] = {"none": 200, "red": 200, "blue": 200, "admin": 200}
    assert table == expected

    runs = {who: {r["run_id"] for r in call(live, "GET /api/v1/runs", keys[who]).json()["data"]}
            for who in ("red", "blue", "admin")}
    assert runs == {"red": {"run-red"}, "blue": {"run-blue"}, "admin": {"run-red", "run-blue"}}
    teams = {who: {g["group"] for g in call(live, "GET /costs", keys[who], group_by="team").json()["groups"]}
             for who in ("red", "blue", "admin")}
    assert "blue" not in teams["red"] and "red" not in teams["blue"]
    assert {"red", "blue"} <= teams["admin"]
    assert call(live, "GET /costs", None).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_every_form_post_needs_a_csrf_token(people, objects):
    """Even an admin's POST without the token is refused, on every route that takes one."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(people.ada)
    before = state()
    takes_post = POST_ONLY | {"dashboard:keys", "personas:create", "personas:edit", "providers:create",
                              "providers:edit", "budgets:create", "budgets:edit", "login"}
    statuses = {name: client.post(url_of(name, objects), {"name": "x"}).status_code for name in sorted(takes_post)}
    assert statuses == dict.fromkeys(statuses, 403)
    assert state() == before
