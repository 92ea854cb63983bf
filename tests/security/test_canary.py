"""Canaries: a provider credential and API keys (a real one and an unknown
one) are planted, every error path is exercised, and neither appears in any
log line, trace span (the console exporter writes them to the log), response,
dashboard page, metric, audit entry or Usage row."""

from __future__ import annotations

import json

import httpx
import pytest
from django.core import serializers
from django.test import Client

from accounts.models import ApiKey, AuditEntry
from budgets.models import Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.conftest import start_daphne, stop_process
from tests.dashboard.conftest import client_for
from tests.fakes.common import FakeReply, Fault
from tests.fakes.openai_server import FakeOpenAIServer

PROVIDER_CANARY = "sk-canary-provider-5f1e0c9a7b3d2e4f6a8b"
UNKNOWN_KEY_CANARY = "ep-canary-unknown-key-9d8c7b6a5f4e3d2c1b0a"
URL_KEY = "ep-canary-sent-in-a-url-1a2b3c4d5e6f7a8b9c0d"
FAULTS = [Fault("status", status=401, message="Incorrect API key provided: " + PROVIDER_CANARY[:12]),
          Fault("status", status=500), Fault("status", status=429, retry_after=1), Fault("malformed"),
          Fault("status", status=400, message="bad request"),
          Fault("cut", after_chunks=1, reply=FakeReply(text="cut short here"))]


@pytest.fixture
def canary_gateway(test_database_url, transactional_db):
    server = start_daphne(test_database_url, name="canary", EP_TRACING="console")
    yield server
    stop_process(server.process)


def test_no_canary_appears_anywhere(canary_gateway, world, people):
    live = canary_gateway
    fake = FakeOpenAIServer().start()
    try:
        provider = Provider.objects.create(name="canary", kind="openai", base_url=fake.base_url + "/v1",
                                           read_timeout=5)
        provider.set_credential(PROVIDER_CANARY)
        provider.save()
        Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
        persona = Persona.objects.create(slug="via-canary", max_output_tokens=50)
        RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
        _, key_canary = ApiKey.issue(team=world.red, name="canary key", scopes=["admin"])
        seen = exercise(live, fake, key_canary)
        assert fake.requests and all(PROVIDER_CANARY in json.dumps(r["headers"]) for r in fake.requests)
    finally:
        fake.stop()
    seen += pages(people, Usage.objects.filter(team=world.red).first())
    seen.append(httpx.get(live.url + "/metrics", headers={"Authorization": f"Bearer {world.admin_key}"}).text)
    seen.append(serializers.serialize("json", Usage.objects.all()))
    seen.append(serializers.serialize("json", AuditEntry.objects.all()))
    assert URL_KEY not in "\n".join(seen)
    seen.append(live.log_text())
    assert Usage.objects.filter(status="error").exists() and "span_id" in live.log_text()  # traces were written
    everything = "\n".join(seen)
    for secret in (PROVIDER_CANARY, PROVIDER_CANARY[3:], key_canary, key_canary[10:], UNKNOWN_KEY_CANARY):
        assert secret not in everything, secret[:12]


def exercise(live, fake, key: str) -> list[str]:
    """Every error path once (and the happy ones), returning what the clients saw."""
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": "via-canary", "messages": [{"role": "user", "content": "hi"}]}
    responses = []
    for fault in FAULTS:
        fake.script(fault)
        responses.append(httpx.post(live.url + "/v1/chat/completions", headers=auth, timeout=15,
                                    json={**body, "stream": fault.kind == "cut"}))
    fake.script(Fault("status", status=500))
    responses.append(httpx.post(live.url + "/api/v1/chat", headers=auth, timeout=15,
                                json={"persona": "via-canary", "messages": body["messages"]}))
    fake.script(Fault("status", status=401))
    responses.append(httpx.post(live.url + "/v1/messages", headers={"x-api-key": key}, timeout=15,
                                json={**body, "max_tokens": 20}))
    responses += [
        httpx.post(live.url + "/v1/chat/completions", headers=auth, json=body),  # a success
        httpx.post(live.url + "/v1/chat/completions", headers=auth, json={**body, "max_tokens": 5000}),
        httpx.post(live.url + "/v1/chat/completions", headers=auth, content=b'{"model": ['),
        httpx.post(live.url + "/v1/chat/completions", headers=auth, json={**body, "model": "nobody"}),
        # A key in a URL is refused, but daphne's access log has already written the URL
        # (docs/SECURITY.md, residual risks): this one is checked everywhere but the log.
        httpx.get(live.url + "/v1/models", params={"api_key": URL_KEY}, headers=auth),
        httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {UNKNOWN_KEY_CANARY}"}),
        httpx.get(live.url + "/v1/models", headers={"Authorization": f"Basic {UNKNOWN_KEY_CANARY}"}),
        httpx.get(live.url + "/health", params={"deep": "true"}, headers=auth),
        httpx.get(live.url + "/capabilities"), httpx.get(live.url + "/api/openapi.json"),
        httpx.get(live.url + "/costs", headers=auth), httpx.get(live.url + "/api/v1/runs", headers=auth),
    ]
    assert {r.status_code for r in responses} >= {200, 400, 401, 404, 502}
    return [r.text + json.dumps(dict(r.headers)) for r in responses]


def pages(people, row) -> list[str]:
    ada = client_for(people.ada)
    paths = ["/dashboard/", "/dashboard/providers/", "/dashboard/providers/canary/", "/dashboard/keys/",
             "/dashboard/usage/", f"/dashboard/usage/{row.pk}/", "/dashboard/audit/", "/dashboard/costs/?format=csv",
             "/admin/providers/provider/", "/admin/accounts/apikey/"]
    found = []
    for path in paths:
        response = ada.get(path)
        assert response.status_code == 200, path
        body = b"".join(response) if response.streaming else response.content  # the CSV export streams
        found.append(body.decode())
    found.append(Client().get("/login/").content.decode())
    return found
