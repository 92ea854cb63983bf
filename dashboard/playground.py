"""The playground: an operator tries a persona in the page, streamed.

It runs the same pipeline as POST /v1/chat/completions, under a key of the
"dashboard" team made for the logged-in user, so every try is a Usage row that
costs and budgets see (team "dashboard", endpoint "dashboard.playground").
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_POST

from gateway import pipeline
from gateway.errors import GatewayError
from accounts.snapshot import KeyInfo, load_key
from accounts.models import ApiKey, Team
from accounts.roles import async_operator_required
from providers.types import ChatRequest, Message

DASHBOARD_TEAM = "dashboard"
MAX_PROMPT_CHARS = 20_000


@transaction.atomic
def playground_key_ensure(user) -> KeyInfo:
    """The user's playground key (created on first use; its raw value is never kept)."""
    team, _ = Team.objects.get_or_create(name=DASHBOARD_TEAM)
    name = f"playground: {user.username}"[:100]
    key = ApiKey.objects.filter(team=team, name=name, revoked_at__isnull=True).first()
    if key is None:
        key, _raw = ApiKey.issue(team=team, name=name, scopes=["chat"])
    return load_key(key.key_hash)


def _text(event) -> str:
    """The playground shows plain text: deltas, and a plain line if the provider fails."""
    if event.type == "delta":
        return event.text
    if event.type == "error":
        return f"\n\n[The provider failed mid-answer: {event.error.kind}]"
    return ""


@require_POST
@async_operator_required
async def playground(request: HttpRequest, slug: str) -> HttpResponse:
    user = await request.auser()
    prompt = request.POST.get("prompt", "").strip()[:MAX_PROMPT_CHARS]
    if not prompt:
        return HttpResponse("Type a message for the persona first.", status=400, content_type="text/plain")
    key = await sync_to_async(playground_key_ensure)(user)
    call = pipeline.Call(request_id=pipeline.new_request_id(), endpoint="dashboard.playground", key=key, stream=True)
    try:
        route = pipeline.route_resolve(snapshot=await pipeline.current_snapshot(), model=slug, key=key)
        call.persona = slug
        events = pipeline.chat_stream(call, route, ChatRequest(model="", messages=[Message("user", prompt)]))
        first = await anext(events, None)
    except GatewayError as error:
        call.fail(error)
        await pipeline.usage_record(call)
        return HttpResponse(error.message, status=error.status, content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(pipeline.relay(call, events, first, _text),
                                     content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Request-ID"] = call.request_id
    response["X-EP-Provider"], response["X-EP-Model"] = call.provider, call.model
    return response
