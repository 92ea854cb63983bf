"""GET /metrics: the Prometheus scrape (what is counted: gateway/observability/metrics.py)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Router
from ninja.security import HttpBearer

from api.auth import ApiKeyAuth, refuse_key_in_query
from api.errors import error_responses
from gateway.errors import PermissionDenied
from gateway.observability.metrics import exposition


class ScraperAuth(HttpBearer):
    """An API key with the admin scope (Prometheus: `authorization: credentials_file`),
    or anyone when EP_METRICS_PUBLIC=1. A keyed scrape is an authenticated
    request like any other, so it leaves its Usage row (cost 0)."""

    is_async = True

    async def __call__(self, request: HttpRequest):
        refuse_key_in_query(request)
        if settings.EP_METRICS_PUBLIC:
            return True
        key = await ApiKeyAuth()(request)
        if not key.has_scope("admin"):
            raise PermissionDenied("Metrics need an API key with the admin scope.", code="admin_scope_required")
        return key

    def authenticate(self, request, token):  # pragma: no cover - __call__ does the work
        raise NotImplementedError


router = Router(tags=["Operations"], auth=ScraperAuth())


@router.get("/metrics", summary="Prometheus metrics (admin key)",
            response={200: None, **error_responses(400, 401, 403, 500, 503)}, include_in_schema=True)
async def metrics_view(request: HttpRequest):
    body, content_type = await sync_to_async(exposition, thread_sensitive=False)()
    return HttpResponse(body, content_type=content_type)
