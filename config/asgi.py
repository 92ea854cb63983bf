"""ASGI entry point: HTTP through Django, websockets through Channels.

HTTP is split by path. The API (api.paths: what Hive and scripts call) goes to
ApiHandler: the same URLconf and views, but a middleware chain of async-native
middleware only. Django's MiddlewareMixin middlewares (sessions, auth, CSRF,
messages...) each hop through a thread under ASGI, and Django's handler sends
the request signals through another; the API needs none of them (it
authenticates by API key, keeps no session and sets no cookie). Every other
path (the dashboard, admin, login, the API docs) keeps the full chain of
settings.MIDDLEWARE.

Websockets pass the origin check, then the session (for logged-in staff in the
dashboard), then the URL router; consumers authenticate before they accept.
Both protocols go through Backpressure, so a slow client pauses its stream.
"""

import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from asgiref.sync import markcoroutinefunction
from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.urls import set_script_prefix
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

from api import mcp_server
from api.paths import is_api_path
from api.websocket.routing import OriginCheck, allowed_origins, websocket_urlpatterns
from config.backpressure import Backpressure
from gateway.observability.logs import access_logs_scrubbed

# Whichever server loads this (uvicorn with its access log on, daphne's
# runserver), its access log keeps no query string: a key sent in a URL is
# refused, and must not then sit in the log.
access_logs_scrubbed()


class ApiSecurityHeaders:
    """The headers SecurityMiddleware, XFrameOptionsMiddleware and CommonMiddleware
    give dashboard responses, natively async for the API's chain."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)
        self.headers = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": settings.X_FRAME_OPTIONS}
        if settings.SECURE_REFERRER_POLICY:
            self.headers["Referrer-Policy"] = settings.SECURE_REFERRER_POLICY
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            self.headers["Cross-Origin-Opener-Policy"] = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY

    async def __call__(self, request):
        response = await self.get_response(request)
        for name, value in self.headers.items():
            if name not in response:
                response[name] = value
        if not response.streaming and "Content-Length" not in response:
            response["Content-Length"] = str(len(response.content))
        return response


# Natively async middleware the API does without: login throttling guards the
# dashboard's login forms, and the API has no login; htmx headers mean something
# to the dashboard's pages only (it cost ~2% of an API request's CPU).
SITE_ONLY_MIDDLEWARE = ("axes.middleware.AxesMiddleware", "django_htmx.middleware.HtmxMiddleware")


def api_middleware() -> list[type]:
    """settings.MIDDLEWARE without the MiddlewareMixin ones (each a thread hop
    under ASGI), whose headers ApiSecurityHeaders gives instead; natively async
    middleware (the ledger, the content security policy) keep their order."""
    chain: list[type] = []
    for path in settings.MIDDLEWARE:
        if path in SITE_ONLY_MIDDLEWARE:
            continue
        middleware = import_string(path)
        if issubclass(middleware, MiddlewareMixin):
            if ApiSecurityHeaders not in chain:
                chain.append(ApiSecurityHeaders)
        else:
            chain.append(middleware)
    return chain


class ApiHandler(ASGIHandler):
    """Django's ASGIHandler for the API paths: async-native middleware only, no
    per-request thread context, no request signals.

    The request signals only close this thread's database connections, and
    nothing on the API path opens one on the event-loop thread: its database
    work runs in worker threads (sync_to_async) and the ledger's writer
    thread, which keep their own connections.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        self._resolved: dict[str, object] = {}
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for middleware in reversed(api_middleware()):
            handler = convert_exception_to_response(middleware(handler))
        self._middleware_chain = handler

    async def __call__(self, scope, receive, send) -> None:
        await self.handle(scope, receive, send)

    RESOLVED_PATHS = 1024

    def resolve_request(self, request):
        """Django's URL resolution, remembered per path: walking the URLconf's
        patterns was 6% of a request's CPU, and the API has a handful of paths.
        The memory is bounded, so ids in paths cannot grow it without limit."""
        match = self._resolved.get(request.path_info)
        if match is None:
            match = super().resolve_request(request)
            if len(self._resolved) < self.RESOLVED_PATHS:
                self._resolved[request.path_info] = match
        request.resolver_match = match
        return match

    async def handle(self, scope, receive, send) -> None:
        # ASGIHandler.handle (Django 5.2) without the request_started /
        # request_finished signals; the disconnect handling is the same.
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error_response, send)
                return

            async def process_request():
                response = await self.run_get_response(request)
                try:
                    await self.send_response(response, send)
                except asyncio.CancelledError:
                    pass  # the client went away while we sent
                return response

            listener = asyncio.create_task(self.listen_for_disconnect(receive))
            processor = asyncio.create_task(process_request())
            await asyncio.wait((listener, processor), return_when=asyncio.FIRST_COMPLETED)
            for task in (listener, processor):  # the listener first: it must not outlive us
                if task.done():
                    try:
                        task.result()
                    except (RequestAborted, asyncio.CancelledError):
                        pass
                else:
                    task.cancel()  # a departed client cancels its view (and so its stream)
                    try:
                        await task
                    except (RequestAborted, asyncio.CancelledError):
                        pass
        finally:
            body_file.close()


def http_router(api_app, site_app):
    async def route(scope, receive, send) -> None:
        if mcp_server.is_mcp_path(scope["path"]):  # the MCP SDK's own ASGI handling (api/mcp_server.py)
            await mcp_server.app(scope, receive, send)
            return
        app = api_app if is_api_path(scope["path"]) else site_app
        await app(scope, receive, send)

    return route


application = Backpressure(ProtocolTypeRouter({
    "http": http_router(ApiHandler(), django_asgi_app),
    "websocket": OriginCheck(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), allowed_origins()),
}))
