"""Project-level error pages: JSON envelopes for API paths."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, HttpResponseServerError

from api.auth import request_id_of
from gateway.errors import GatewayError, NotFound, envelope
from api.responses import json_response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(("/v1/", "/api/", "/health", "/capabilities", "/costs"))


def not_found(request: HttpRequest, exception=None) -> HttpResponse:
    if _is_api(request):
        error = NotFound(f"No endpoint at {request.method} {request.path}.", code="unknown_endpoint")
        return json_response(envelope(error, request_id_of(request)), request_id_of(request), status=404)
    return HttpResponseNotFound("<h1>Not found</h1><p>There is no page at this address.</p>")


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        error = GatewayError("Internal error; quote the request id when reporting it.", status=500, code="internal_error")
        error.type = "api_error"
        return json_response(envelope(error, request_id_of(request)), request_id_of(request), status=500)
    return HttpResponseServerError("<h1>Server error</h1>")
