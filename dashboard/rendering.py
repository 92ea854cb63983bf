"""Shared dashboard plumbing: page-or-fragment rendering and static files."""

from __future__ import annotations

from django.contrib.staticfiles.views import serve as staticfiles_serve
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.roles import role_context


def render_page(
    request: HttpRequest, template: str, context: dict | None = None, *, fragment: str | None = None,
    status: int = 200,
) -> HttpResponse:
    """The whole page, or only its `{% partialdef fragment %}` when htmx asks."""
    name = f"{template}#{fragment}" if fragment and getattr(request, "htmx", False) else template
    return render(request, name, {"role": role_context(request.user), **(context or {})}, status=status)


def wants_fragment(request: HttpRequest) -> bool:
    return bool(getattr(request, "htmx", False))


@require_GET
def static_file(request: HttpRequest, path: str) -> HttpResponse:
    """Serve the dashboard's CSS and the JS that django-htmx ships.

    Only /static/ requests come here. WhiteNoise's middleware is sync-only and
    would put a thread hop in front of every API request of this async
    gateway; a proxy may still serve `collectstatic`'s STATIC_ROOT instead.
    The finders only look inside the configured static folders.
    """
    response = staticfiles_serve(request, path, insecure=True)
    response["Cache-Control"] = "public, max-age=3600"
    return response
