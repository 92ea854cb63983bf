"""GET /capabilities tells anyone which provider kinds are enabled and what
each supports; which providers are configured under which names, their models
and every persona's route answer a valid API key only (docs/SECURITY.md)."""

from __future__ import annotations

import json

import httpx

from budgets.models import Usage
from providers.models import Model, Provider

INTERNAL = "azure-eastus-prod"  # a provider name that says where the money goes


def test_an_anonymous_caller_sees_kinds_and_features_but_no_configuration(live, world):
    provider = Provider.objects.create(name=INTERNAL, kind="openai", base_url="http://127.0.0.1:9/v1")
    Model.objects.create(provider=provider, name="gpt-internal-finetune")
    Provider.objects.create(name="off", kind="gemini", enabled=False)

    anonymous = httpx.get(live.url + "/capabilities")
    assert anonymous.status_code == 200
    body = anonymous.json()
    assert set(body) == {"kinds"}
    assert set(body["kinds"]) == {"demo", "openai"}  # enabled kinds only
    assert body["kinds"]["openai"]["capabilities"]["tools"] is True and body["kinds"]["demo"]["demo"] is True
    for private in (INTERNAL, "gpt-internal-finetune", "architect", "127.0.0.1"):
        assert private not in anonymous.text
    assert Usage.objects.count() == 0

    keyed = httpx.get(live.url + "/capabilities", headers={"Authorization": f"Bearer {world.blue_key}"})
    assert keyed.status_code == 200
    body = keyed.json()
    assert body["providers"][INTERNAL]["models"] == ["gpt-internal-finetune"]
    assert body["providers"]["off"]["enabled"] is False
    assert body["personas"]["architect"] == ["demo/demo"]
    assert "127.0.0.1" not in json.dumps(body) and "base_url" not in json.dumps(body)
    assert Usage.objects.get().endpoint == "capabilities"  # a keyed request leaves its row

    refused = httpx.get(live.url + "/capabilities", headers={"Authorization": "Bearer ep-not-a-key"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert INTERNAL not in refused.text
