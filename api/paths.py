"""Which paths are the API, said once: config/asgi.py routes them to the lean
API handler, the ledger middleware opens their calls, and the 404/500 handlers
answer them with the JSON envelope instead of a page."""

from __future__ import annotations

from django.http import HttpRequest

from gateway.call import new_request_id

API_PATHS = ("/v1/", "/api/", "/health", "/costs", "/capabilities", "/metrics")
# What OpenAI and Anthropic SDKs call when their base URL lacks "/v1": no
# endpoint, but the answer is the envelope saying so, not an HTML page.
UNPREFIXED_SDK_PATHS = ("/chat/completions", "/completions", "/embeddings", "/models", "/messages", "/responses")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PATHS)


def is_unprefixed_sdk_path(path: str) -> bool:
    return path.startswith(UNPREFIXED_SDK_PATHS)


def request_id_of(request: HttpRequest) -> str:
    """The request's id (X-Request-ID), made on first use."""
    request_id = getattr(request, "ep_request_id", None)
    if request_id is None:
        request_id = request.ep_request_id = new_request_id()
    return request_id
