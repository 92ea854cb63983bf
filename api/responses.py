"""Small response helpers shared by the API modules."""

from __future__ import annotations

import json

from django.http import HttpResponse


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
