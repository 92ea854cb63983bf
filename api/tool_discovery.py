"""GET /api/v1/tools: the tools this key may use, with their JSON schemas.

Each entry is an OpenAI function tool definition (`{"type": "function",
"function": {name, description, parameters}}`, so a client can pass the list
on as `tools`) plus where it comes from: `server`, and the tool's `name` there.
The function's name is the qualified `<server>__<tool>`, as /mcp and the
server-side loop name it.
With `?persona=slug`: only the tools that persona offers, still narrowed to
the key's grants (a persona never widens what a key may use).
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router, Schema

from api.auth import ApiKeyAuth
from api.errors import KEYED, error_responses
from api.responses import json_response
from gateway.call import Call
from gateway.config import config_cache
from gateway.errors import NotFound
from tools import registry
from tools.types import ToolSpec

router = Router(tags=["Tools"], auth=ApiKeyAuth())


class ToolsQuery(Schema):
    persona: str | None = None


def tool_definition(spec: ToolSpec) -> dict:
    return {"type": "function", "server": spec.server, "name": spec.name,
            "function": {"name": spec.qualified_name, "description": spec.description,
                         "parameters": spec.input_schema}}


@router.get("/tools", summary="The tools this key may use (optionally: those a persona offers)",
            response={200: dict, **error_responses(*KEYED, 404)})
async def list_tools(request: HttpRequest, query: Query[ToolsQuery]):
    call: Call = request.ep_call
    call.endpoint = "tools"
    persona = query.persona
    if persona is not None:
        known = (await config_cache.snapshot()).personas
        if persona not in known:
            raise NotFound(f"Unknown persona '{persona}'. Known personas: {', '.join(sorted(known)) or 'none'}.",
                           code="unknown_persona", param="persona")
        call.persona = persona
    specs = await registry.available_tools(call.key, persona)
    body = {"object": "list", "persona": persona, "data": [tool_definition(spec) for spec in specs]}
    return json_response(body, call.request_id)
