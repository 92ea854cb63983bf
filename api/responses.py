"""Response helpers shared by the API's wire formats."""

from __future__ import annotations

import json

from django.http import HttpResponse, StreamingHttpResponse

from gateway.call import Call


def json_response(data, request_id: str, *, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    # json.dumps with compact separators is measurably cheaper than
    # JsonResponse's DjangoJSONEncoder on the hot path; Decimal/str values are
    # converted by the callers.
    response = HttpResponse(
        json.dumps(data, separators=(",", ":"), default=str), content_type="application/json", status=status
    )
    response["X-Request-ID"] = request_id
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def served_by_headers(call: Call) -> dict[str, str]:
    """Which persona, provider and model answered, and (for a persona with the
    response cache on) what the cache did: hit, miss, bypass, refresh or skip."""
    headers = {"X-EP-Persona": call.persona, "X-EP-Provider": call.provider, "X-EP-Model": call.model}
    if call.cache_status:
        headers["X-EP-Cache"] = call.cache_status
    return headers


def streaming_response(call: Call, body, *, headers: dict[str, str] | None = None) -> StreamingHttpResponse:
    """An SSE answer: never cached, never buffered by a proxy, with its request id."""
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold events back
    response["X-Request-ID"] = call.request_id
    for name, value in (headers or {}).items():
        response[name] = value
    return response
