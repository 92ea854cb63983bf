"""Every route has an authorization rule, written down here: a new Django URL,
ninja operation or websocket route without one fails this test, so whoever
adds it has to decide (and test_isolation.py then walks it)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver
from ninja.utils import normalize_path

from api.auth import ApiKeyAuth
from api.urls import api
from api.websocket.routing import websocket_urlpatterns

# Who may use each dashboard route (by URL name), see accounts/roles.py:
#   public    anyone, logged in or not
#   login     any logged-in user (what they see is scoped to their teams)
#   costs     team leads (their own teams) and operators
#   operator  operators and admins
#   admin     superusers only
#   staff     Django admin: is_staff users, by Django's own permissions
DASHBOARD_RULES = {
    "home": "public", "login": "public", "logout": "login", "static": "public",
    "dashboard:overview": "login",
    "dashboard:keys": "operator", "dashboard:key_revoke": "operator", "dashboard:audit": "operator",
    "dashboard:team_create": "admin", "dashboard:membership_set": "admin",
    "dashboard:user_invite": "admin", "dashboard:user_reinvite": "admin",
    "set_password": "public",  # an invitation link: its one-use token is the permission
    "personas:list": "operator", "personas:create": "operator", "personas:export": "operator",
    "personas:import": "operator", "personas:edit": "operator", "personas:step_add": "operator",
    "personas:step_update": "operator", "personas:step_move": "operator", "personas:step_remove": "operator",
    "personas:playground": "operator",
    "providers:list": "operator", "providers:create": "operator", "providers:edit": "operator",
    "providers:model_add": "operator", "providers:model_delete": "operator", "providers:test": "operator",
    "providers:model_edit": "operator", "providers:catalog_refresh": "operator",
    "tools:list": "operator", "tools:server": "operator", "tools:server_refresh": "operator",
    "tools:tool_approve": "operator", "tools:tool_settings": "operator", "tools:grants": "operator",
    "tools:persona": "operator", "tools:calls": "costs",
    "tools:server_create": "admin",  # what a tool server runs, or where calls go: like a provider's base URL
    "budgets:list": "costs", "budgets:alert_ack": "costs", "budgets:costs": "costs", "budgets:usage": "costs",
    "budgets:usage_detail": "costs", "budgets:run": "costs", "budgets:create": "operator", "budgets:edit": "operator",
    "documents:list": "operator", "documents:delete": "operator",
    "api:openapi-json": "public", "api:openapi-view": "public", "api:api-root": "public",
    "api-not-found": "public",  # the JSON 404 for unknown /v1/ and /api/ paths
}

# Who may call each API operation:
#   key        any valid API key; answers are scoped to the key's team (admin scope: every team)
#   public     no key (no secrets, no per-team data in the answer)
#   admin-key  an API key with the admin scope
#   public+admin-key  public, but ?deep=true needs an admin key (it calls providers)
#   public+key  public, but the configuration (names, models, routes) answers a valid key only
API_RULES = {
    "POST /v1/chat/completions": "key", "GET /v1/models": "key", "POST /v1/messages": "key",
    "GET /v1/models/{path:model_id}": "key", "POST /v1/embeddings": "key", "POST /v1/completions": "key",
    "POST /v1/messages/count_tokens": "key", "POST /api/v1/chat": "key",
    "POST /v1/responses": "key", "GET /v1/responses/{response_id}": "key",
    "DELETE /v1/responses/{response_id}": "key", "GET /v1/responses/{response_id}/input_items": "key",
    "GET /api/v1/runs/": "key", "GET /api/v1/runs/{run_id}": "key", "GET /costs": "key",
    "GET /health": "public+admin-key", "GET /capabilities": "public+key", "GET /metrics": "admin-key",
    "POST /v1/files": "key", "GET /v1/files": "key", "GET /v1/files/{file_id}": "key",
    "GET /v1/files/{file_id}/content": "key", "DELETE /v1/files/{file_id}": "key",
    "POST /v1/batches": "key", "GET /v1/batches": "key", "GET /v1/batches/{batch_id}": "key",
    "POST /v1/batches/{batch_id}/cancel": "key",
    "GET /api/v1/tools": "key",  # the key's own tools; /mcp (not a ninja route) is key-only too: tests/api/test_mcp_server.py
}

WEBSOCKET_RULES = {
    "ws/v1/chat": "key or staff session, allowed origin",
    "ws/v1/events": "admin key or staff session, allowed origin",
    "": "refused: every other path (403 at the handshake)",
}


def dashboard_routes() -> dict[str, str]:
    """URL name -> pattern of every Django URL, the admin site aside (Django guards it)."""
    found: dict[str, str] = {}

    def walk(patterns, prefix: str, namespace: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                if str(p.pattern).startswith("admin/"):
                    continue
                ns = ":".join(filter(None, [namespace, p.namespace or ""]))
                walk(p.url_patterns, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern):
                name = p.name or ("static" if "static/" in str(p.pattern) else "api-not-found")
                if namespace == "api" and name not in ("openapi-json", "openapi-view", "api-root"):
                    continue  # ninja operations: checked against API_RULES below
                found[f"{namespace}:{name}" if namespace else name] = prefix + str(p.pattern)

    walk(get_resolver().url_patterns, "", "")
    return found


def api_operations() -> dict[str, bool]:
    """'METHOD /path' -> whether the operation requires an API key."""
    found = {}
    for prefix, router in api._routers:
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                callbacks = list(operation.auth_callbacks) or ([router.auth] if router.auth else [])
                keyed = any(isinstance(c, ApiKeyAuth) for c in callbacks)
                for method in operation.methods:
                    found[f"{method} {normalize_path('/'.join([prefix, path]))}"] = keyed
    return found


def test_every_dashboard_route_has_a_rule():
    routes = dashboard_routes()
    missing = sorted(set(routes) - set(DASHBOARD_RULES))
    assert not missing, f"routes without an authorization rule in DASHBOARD_RULES: {missing}"
    assert not set(DASHBOARD_RULES) - set(routes), "rules for routes that no longer exist"
    assert "admin/" in [str(p.pattern) for p in get_resolver().url_patterns]  # Django admin: its own guard


def test_every_api_operation_has_a_rule_that_matches_its_auth():
    operations = api_operations()
    missing = sorted(set(operations) - set(API_RULES))
    assert not missing, f"API operations without an authorization rule in API_RULES: {missing}"
    assert not set(API_RULES) - set(operations), "rules for operations that no longer exist"
    for label, keyed in operations.items():
        if API_RULES[label] == "key":
            assert keyed, f"{label} is ruled 'key' but does not use ApiKeyAuth"


def test_every_websocket_route_has_a_rule():
    routes = {str(p.pattern) for p in websocket_urlpatterns}
    assert routes == set(WEBSOCKET_RULES)
