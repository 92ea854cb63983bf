"""API-key authentication for the ninja routers."""

from __future__ import annotations

import logging
import re

from django.http import HttpRequest
from ninja.security import HttpBearer

from api.paths import request_id_of
from gateway import pipeline, response_cache
from gateway.errors import InvalidRequest, body_too_large

log = logging.getLogger("api.auth")


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>` (or `x-api-key`, as Anthropic clients send it).

    On success the request gets `ep_call`, the gateway.call.Call that becomes
    its one Usage row; from here on every outcome is recorded.
    """

    is_async = True  # tells ninja to await __call__

    async def __call__(self, request: HttpRequest):
        refuse_key_in_query(request)
        call = await pipeline.call_open(bearer_token(request) or None, endpoint=_endpoint_name(request.path),
                                        request_id=request_id_of(request))
        request.ep_call = call
        log.debug("authenticated (key %d, team %d)", call.key.id, call.key.team_id)
        if limit := getattr(request, "ep_body_too_large", None):  # config/asgi.py stopped reading it
            raise body_too_large(*limit)
        return call.key

    def authenticate(self, request, token):  # pragma: no cover - __call__ does the work
        raise NotImplementedError


# Query parameters that would put a key in URLs, and so in every proxy's access
# log and browser history; the websocket handshake refuses the same names. The
# header names clients send keys in (x-api-key, x-goog-api-key) are here too:
# a client that cannot set headers puts them in the URL.
SECRET_PARAMS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token", "authorization", "auth",
                           "x-api-key", "x_api_key", "x-goog-api-key"})


def refuse_key_in_query(request: HttpRequest) -> None:
    """A key in the URL is refused even beside a valid header: the client is
    leaking it, and it should hear so at once rather than keep doing it."""
    if request.META.get("QUERY_STRING") and SECRET_PARAMS & {name.lower() for name in request.GET}:
        raise InvalidRequest(
            "API keys in the URL are refused: send 'Authorization: Bearer <key>' (or 'x-api-key') instead, "
            "and treat the key that was in the URL as leaked.",
            code="key_in_query_string",
        )


def bearer_token(request: HttpRequest) -> str:
    """The key a request presents: `Authorization: Bearer <key>` or `x-api-key`."""
    return _bearer(request.headers.get("Authorization", "")) or request.headers.get("x-api-key", "")


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _endpoint_name(path: str) -> str:
    # Endpoints with an id in the path name themselves (e.g. "responses.get"); for the
    # rest, control characters go: the name lands on the Usage row, and PostgreSQL
    # text cannot hold a NUL.
    return _CONTROL.sub("", path.strip("/").replace("/", "."))[:40]


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def begin_options(request: HttpRequest, *, run_id: str | None = None, step: str | None = None) -> dict:
    """What an HTTP request's headers say about its call, as pipeline.begin's
    keyword arguments: the persona (X-Persona), the workflow run and step
    (X-EP-Run-Id / X-EP-Step, else the body's metadata), the caller's own
    deadline (X-EP-Timeout, in seconds, capped by the gateway's) and what the
    response cache may do (X-EP-Cache: bypass or refresh)."""
    headers = request.headers
    return {
        "persona_header": headers.get("X-Persona"),
        "run_id": headers.get("X-EP-Run-Id") or run_id or "",
        "step": headers.get("X-EP-Step") or step or "",
        "timeout": _timeout_header(headers.get("X-EP-Timeout")),
        "cache_mode": cache_mode_check(headers.get(response_cache.HEADER)),
    }


def cache_mode_check(value: str | None) -> str:
    """The X-EP-Cache request header (gateway/response_cache.py): absent, bypass or refresh."""
    mode = (value or "").strip().lower()
    if mode and mode not in response_cache.MODES:
        raise InvalidRequest(f"{response_cache.HEADER} must be one of: {', '.join(response_cache.MODES)}.",
                             code="invalid_cache_header", param=response_cache.HEADER)
    return mode


def _timeout_header(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise InvalidRequest("X-EP-Timeout must be a positive number of seconds.", param="X-EP-Timeout")
    return seconds
