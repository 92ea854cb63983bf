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
import tempfile

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
            body_file, too_large = await self.read_body_capped(scope, receive)  # too_large: (cap, its setting)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error_response, send)
                return
            if too_large is not None:
                # Django refuses a body longer than DATA_UPLOAD_MAX_MEMORY_SIZE by its length
                # (RequestDataTooBig when a view reads it): the 413 envelope, after the key is
                # checked, so the refusal leaves its Usage row (api/errors.py body_too_large).
                request.META["CONTENT_LENGTH"] = str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
                request.ep_body_too_large = too_large

            async def process_request():
                response = await self.run_get_response(request)
                try:
                    await self.send_response(response, send)
                except asyncio.CancelledError:
                    pass  # the client went away while we sent
                return response

            tasks = [asyncio.create_task(self.listen_for_disconnect(receive)), asyncio.create_task(process_request())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:  # the listener first: it must not outlive us
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
            # A caught RequestAborted or CancelledError keeps this frame in its
            # traceback, and its task keeps the exception: with the tasks still
            # in this frame's locals, every request became a reference cycle of
            # ~85 objects (the request, its response, their tasks) that only the
            # garbage collector freed, and a long stream's only a full collection
            # (tests/config/test_serve.py counts them).
            tasks = task = None


    async def read_body_capped(self, scope, receive):
        """The request body, read no further than this path could ever accept: a
        body over the cap is refused (413) without the rest of it reaching memory or
        disk. Django's own read_body takes everything first, spooling to disk."""
        cap, setting = body_cap(scope["path"])
        refused = (cap, setting)
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
        if declared_length(scope) > cap:
            return body_file, refused  # not a byte read; the server drops what the client still sends
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            size += len(message.get("body", b""))
            if size > cap:
                body_file.seek(0)
                body_file.truncate()
                return body_file, refused
            if "body" in message:
                body_file.write(message["body"])
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file, None

    async def listen_for_disconnect(self, receive):
        """Django's, except that the rest of a body refused as too large may still
        arrive (read and dropped) before the client goes."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()


# A multipart upload's framing around the file (boundaries, part headers, the purpose field).
MULTIPART_FRAMING_BYTES = 64 * 1024


def body_cap(path: str) -> tuple[int, str]:
    """The largest body a path accepts, and the setting that says so: EP_MAX_BODY_BYTES, or on
    a file upload (/v1/files) the largest file (EP_BATCH_FILE_MAX_BYTES) in its multipart framing."""
    if path.rstrip("/").endswith("/v1/files") and settings.EP_BATCH_FILE_MAX_BYTES > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return settings.EP_BATCH_FILE_MAX_BYTES + MULTIPART_FRAMING_BYTES, "EP_BATCH_FILE_MAX_BYTES"
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "EP_MAX_BODY_BYTES"


def declared_length(scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


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
