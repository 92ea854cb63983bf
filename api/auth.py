"""API-key authentication for the ninja routers."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from gateway import pipeline
from gateway.errors import InvalidRequest


def request_id_of(request: HttpRequest) -> str:
    request_id = getattr(request, "ep_request_id", None)
    if request_id is None:
        request_id = request.ep_request_id = pipeline.new_request_id()
    return request_id


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>` (or `x-api-key`, as Anthropic clients send it).

    On success the request gets `ep_call`, the pipeline.Call that becomes its
    one Usage row; from here on every outcome is recorded.
    """

    is_async = True  # tells ninja to await __call__

    async def __call__(self, request: HttpRequest):
        refuse_key_in_query(request)
        key = await pipeline.authenticate(bearer_token(request) or None)
        request.ep_call = pipeline.Call(
            request_id=request_id_of(request), endpoint=_endpoint_name(request.path), key=key
        )
        return key

    def authenticate(self, request, token):  # pragma: no cover - __call__ does the work
        raise NotImplementedError


# Query parameters that would put a key in URLs, and so in every proxy's access
# log and browser history; the websocket handshake refuses the same names.
SECRET_PARAMS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token", "authorization", "auth"})


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
    return path.strip("/").replace("/", ".")[:40]
