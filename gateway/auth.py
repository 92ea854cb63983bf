"""API-key authentication for the ninja routers."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from gateway import pipeline


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
        raw = _bearer(request.headers.get("Authorization", "")) or request.headers.get("x-api-key", "")
        key = await pipeline.authenticate(raw or None)
        request.ep_call = pipeline.Call(
            request_id=request_id_of(request), endpoint=_endpoint_name(request.path), key=key
        )
        return key

    def authenticate(self, request, token):  # pragma: no cover - __call__ does the work
        raise NotImplementedError


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _endpoint_name(path: str) -> str:
    return path.strip("/").replace("/", ".")[:40]
