"""GET /capabilities: what this gateway can do, from the adapters (never a
secret or a base URL).

Anyone may ask which provider kinds are enabled and what each supports
(streaming, tools, vision, ...): a client can pick its features from that.
Which providers are configured under which names, their models, and which
provider and model each persona routes to is the operators' configuration:
it answers a valid API key only (docs/SECURITY.md, "What an anonymous caller
sees"); a key sent and refused is a 401, as on every keyed route.
"""

from __future__ import annotations

from dataclasses import asdict

from django.http import HttpRequest
from ninja import Router

from api.auth import bearer_token, refuse_key_in_query
from api.errors import error_responses
from api.paths import request_id_of
from api.responses import json_response
from gateway import pipeline
from gateway.config import Snapshot, config_cache
from providers.adapters import KIND_LABELS, adapter_class

router = Router(tags=["Providers"])


def _kind_capabilities(kind: str) -> dict:
    return {"label": KIND_LABELS.get(kind, kind), "demo": kind == "demo",
            "capabilities": asdict(adapter_class(kind).capabilities)}


def _public(snapshot: Snapshot) -> dict:
    kinds = sorted({p.kind for p in snapshot.providers.values() if p.enabled})
    return {"kinds": {kind: _kind_capabilities(kind) for kind in kinds}}


def _configuration(snapshot: Snapshot) -> dict:
    providers = {name: {"kind": p.kind, **_kind_capabilities(p.kind), "enabled": p.enabled,
                        "models": sorted(p.models)}
                 for name, p in sorted(snapshot.providers.items())}
    personas = {slug: [f"{s.provider.name}/{s.model}" for s in persona.steps]
                for slug, persona in sorted(snapshot.personas.items())}
    return {"providers": providers, "personas": personas}


@router.get("/capabilities", summary="What each provider kind supports; with a key, providers and routes too",
            response={200: dict, **error_responses(400, 401, 500, 503)})
async def capabilities(request: HttpRequest):
    refuse_key_in_query(request)
    snapshot = await config_cache.snapshot()
    body = _public(snapshot)
    raw_key = bearer_token(request)
    if raw_key:
        # Opened like any keyed request, so this one leaves its Usage row too.
        request.ep_call = await pipeline.call_open(raw_key, endpoint="capabilities",
                                                   request_id=request_id_of(request))
        body.update(_configuration(snapshot))
    return json_response(body, request_id_of(request))
