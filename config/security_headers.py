"""Content-Security-Policy on every response (Django 5.2 has none built in).

Dashboard pages load only this site's own CSS and JS (htmx from django-htmx,
static/js/dashboard.js; no CDN, no inline script), talk to this site over
fetch and websockets, and are never framed. Inline styles stay allowed: the
templates set progress-bar widths with `style=` and htmx adds its indicator
style. Everything else (JSON, SSE, CSV) gets a policy that allows nothing.
nosniff, X-Frame-Options DENY and Referrer-Policy come from Django's
SecurityMiddleware and XFrameOptionsMiddleware (see settings).
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

PAGE_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"


def policy_for(content_type: str) -> str:
    return PAGE_POLICY if content_type.startswith("text/html") else DATA_POLICY


class ContentSecurityPolicyMiddleware:
    async_capable = True
    sync_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        return self._stamp(self.get_response(request))

    async def _acall(self, request):
        return self._stamp(await self.get_response(request))

    @staticmethod
    def _stamp(response):
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy_for(response.get("Content-Type", ""))
        return response
