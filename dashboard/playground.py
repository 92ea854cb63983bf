"""The playground: an operator tries a persona in the page, streamed.

It runs the same pipeline and relay as POST /v1/chat/completions, under a key of the
"dashboard" team made for the logged-in user, so every try is a Usage row that
costs and budgets see (team "dashboard", endpoint "dashboard.playground").
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_POST

from accounts.roles import async_operator_required
from accounts.services import playground_key_ensure
from gateway import pipeline, tool_loop
from gateway.call import Call, new_request_id
from gateway.errors import GatewayError
from gateway.recording import usage_record
from gateway.relay import relay
from gateway.tool_loop import ToolProgress
from providers.types import ChatRequest, Message

MAX_PROMPT_CHARS = 20_000


def _text(event) -> str:
    """The playground shows plain text: deltas, a line per tool the platform ran for a
    persona that runs its tools, and a plain line if the provider fails."""
    if isinstance(event, ToolProgress):
        return _tool_text(event)
    if event.type == "delta":
        return event.text
    if event.type == "error":
        return f"\n\n[The provider failed mid-answer: {event.error.kind}]"
    return ""


TOOL_OUTCOMES = {"ok": "done", "error": "failed", "timeout": "timed out", "refused": "refused"}


def _tool_text(progress: ToolProgress) -> str:
    run = progress.run
    if progress.type == "tool_started":
        return f"[Running the tool {run.name}… "
    return f"{TOOL_OUTCOMES.get(run.status, run.status)} in {run.duration_ms} ms]\n\n"


def _failure_text(error: GatewayError) -> str:
    return f"\n\n[{error.message}]"


@require_POST
@async_operator_required
async def playground(request: HttpRequest, slug: str) -> HttpResponse:
    user = await request.auser()
    prompt = request.POST.get("prompt", "").strip()[:MAX_PROMPT_CHARS]
    if not prompt:
        return HttpResponse("Type a message for the persona first.", status=400, content_type="text/plain")
    key = await sync_to_async(playground_key_ensure)(user)
    call = Call(request_id=new_request_id(), endpoint="dashboard.playground", key=key, stream=True)
    chat_request = ChatRequest(model="", messages=[Message("user", prompt)])
    try:
        route = await pipeline.begin(call, chat_request, model=slug)
        loop = await tool_loop.plan(call, route, chat_request)
        events, first = await tool_loop.stream_start(call, route, chat_request, loop)
    except GatewayError as error:
        call.fail(error)
        await usage_record(call)
        return HttpResponse(error.message, status=error.status, content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(relay(call, events, _text, first=first, on_failure=_failure_text),
                                     content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Request-ID"] = call.request_id
    response["X-EP-Provider"], response["X-EP-Model"] = call.provider, call.model
    return response
