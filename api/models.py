"""GET /v1/models and GET /v1/models/{id}: what this key can call.

The ids are persona slugs, and `provider/model` for keys with the `direct`
scope. OpenAI's SDKs get OpenAI's shapes; the anthropic SDK (which sends
`anthropic-version`) gets Anthropic's, errors included (api/errors.py).
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from accounts.snapshot import KeyInfo
from api.auth import ApiKeyAuth
from api.errors import KEYED, error_responses
from api.responses import json_response
from gateway.call import Call
from gateway.config import Snapshot, config_cache
from gateway.errors import NotFound

router = Router(tags=["OpenAI compatible"], auth=ApiKeyAuth())

# Anthropic's model objects carry a creation time; personas have none to give.
EPOCH = "1970-01-01T00:00:00Z"


def callable_models(snapshot: Snapshot, key: KeyInfo) -> list[tuple[str, str, str]]:
    """(id, owner, display name) of every model id this key may name."""
    models = [(slug, "persona", persona.name or slug) for slug, persona in sorted(snapshot.personas.items())]
    if key.has_scope("direct"):
        for provider in snapshot.providers.values():
            models += [(f"{provider.name}/{m}", provider.name, m) for m in sorted(provider.models)]
    return models


def _anthropic_client(request: HttpRequest) -> bool:
    return "anthropic-version" in request.headers


def _model_json(model: tuple[str, str, str], anthropic: bool) -> dict:
    model_id, owner, name = model
    if anthropic:
        return {"type": "model", "id": model_id, "display_name": name, "created_at": EPOCH}
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}


@router.get("/models", summary="List the personas (and models) this key can call",
            response={200: dict, **error_responses(*KEYED)})
async def list_models(request: HttpRequest):
    call: Call = request.ep_call
    call.endpoint = "models"
    anthropic = _anthropic_client(request)
    data = [_model_json(m, anthropic) for m in callable_models(await config_cache.snapshot(), call.key)]
    if anthropic:
        body = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
    else:
        body = {"object": "list", "data": data}
    return json_response(body, call.request_id)


@router.get("/models/{path:model_id}", summary="One persona or model this key can call",
            response={200: dict, **error_responses(*KEYED, 404)})
async def retrieve_model(request: HttpRequest, model_id: str):
    call: Call = request.ep_call
    call.endpoint = "models"
    found = next((m for m in callable_models(await config_cache.snapshot(), call.key) if m[0] == model_id), None)
    if found is None:
        raise NotFound(f"No persona or model '{model_id}' for this key; GET /v1/models lists them.",
                       code="model_not_found", param="model")
    return json_response(_model_json(found, _anthropic_client(request)), call.request_id)
