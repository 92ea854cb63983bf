"""GET /capabilities: what each configured provider and model supports,
straight from the adapters (no secrets, no base URLs)."""

from __future__ import annotations

from dataclasses import asdict

from django.http import HttpRequest
from ninja import Router

from api.auth import refuse_key_in_query
from api.errors import error_responses
from api.paths import request_id_of
from api.responses import json_response
from gateway.config import config_cache
from providers.adapters import KIND_LABELS, adapter_class

router = Router(tags=["Providers"])


def _provider_capabilities(provider) -> dict:
    adapter_cls = adapter_class(provider.kind)
    return {
        "kind": provider.kind,
        "label": KIND_LABELS.get(provider.kind, provider.kind),
        "demo": provider.kind == "demo",
        "enabled": provider.enabled,
        "capabilities": asdict(adapter_cls.capabilities),
        "models": sorted(provider.models),
    }


@router.get("/capabilities", summary="What each provider supports", response={200: dict, **error_responses(400, 500, 503)})
async def capabilities(request: HttpRequest):
    refuse_key_in_query(request)
    snapshot = await config_cache.snapshot()
    providers = {name: _provider_capabilities(p) for name, p in sorted(snapshot.providers.items())}
    personas = {
        slug: [f"{s.provider.name}/{s.model}" for s in persona.steps]
        for slug, persona in sorted(snapshot.personas.items())
    }
    return json_response({"providers": providers, "personas": personas}, request_id_of(request))
