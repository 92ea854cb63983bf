"""The NinjaAPI: mounts each app's router, and turns every error into the one
JSON envelope (see gateway/errors.py). OpenAPI at /api/openapi.json."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from api import anthropic_compat, health, openai_compat
from api.auth import request_id_of
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    envelope,
)
from api.responses import json_response
from api import costs as budgets_api
from api import capabilities as providers_api

log = logging.getLogger("api.urls")

api = NinjaAPI(
    title="Execution Platform",
    version="1.0",
    description="One API for every LLM provider, routed by persona, with budgets and cost tracking.",
    openapi_url="/api/openapi.json",
    docs_url="/api/docs",
    urls_namespace="api",
)
api.add_router("/v1", openai_compat.router)
api.add_router("/v1", anthropic_compat.router)
api.add_router("", health.router)
api.add_router("/api/v1/runs", "api.runs.router")  # workflow runs (issue 9)
api.add_router("/api/v1", "api.native.router")  # native chat, JSON or SSE (issue 6)
api.add_router("", providers_api.router)
api.add_router("", budgets_api.router)
api.add_router("", "gateway.observability.metrics.router")  # GET /metrics for Prometheus (issue 10)


def error_response(request: HttpRequest, error: GatewayError):
    call = getattr(request, "ep_call", None)
    if call is not None:
        call.fail(error)
    request_id = request_id_of(request)
    if anthropic_compat.owns(request.path):  # Claude clients parse Anthropic's error shape
        return anthropic_compat.error_response(error, request_id)
    return json_response(envelope(error, request_id), request_id, status=error.status, headers=error.headers)


@api.exception_handler(GatewayError)
def on_gateway_error(request: HttpRequest, exc: GatewayError):
    return error_response(request, exc)


def _describe_validation(errors: list[dict]) -> tuple[str, str | None]:
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "payload")]
    # ninja names the body parameter; drop it so `param` is the client's field.
    if loc and loc[0] == "body":
        loc = loc[1:]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    return (f"{param}: {message}" if param else message), param


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError):
    message, param = _describe_validation(exc.errors)
    return error_response(request, InvalidRequest(f"Invalid request: {message}", param=param))


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError):
    return error_response(request, AuthenticationFailed("Missing or invalid API key."))


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError):
    message = str(exc)
    # ninja reports a body that is not JSON as a plain 400; give it its own code.
    code = "invalid_json" if message.startswith("Cannot parse request body") else f"http_{exc.status_code}"
    return error_response(request, GatewayError(message, status=exc.status_code, code=code))


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: RequestDataTooBig):
    return error_response(request, PayloadTooLarge("Request body is larger than this gateway accepts."))


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404):
    return error_response(request, NotFound("Not found."))


@api.exception_handler(Exception)
def on_unexpected(request: HttpRequest, exc: Exception):
    log.exception("unhandled error in %s", request.path)
    error = GatewayError("Internal error; quote the request id when reporting it.", status=500, code="internal_error")
    error.type = "api_error"
    return error_response(request, error)
