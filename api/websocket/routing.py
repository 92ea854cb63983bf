"""Websocket URL routes and the origin check in front of them."""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host
from django.urls import path, re_path

from api.websocket import consumers

websocket_urlpatterns = [
    path("ws/v1/chat", consumers.ChatConsumer.as_asgi()),
    path("ws/v1/events", consumers.EventsConsumer.as_asgi()),
    # Any other path is refused at the handshake (403); without this route
    # channels' router raises, and the server answers the handshake with a 500.
    re_path(r"", WebsocketDenier.as_asgi()),
]

DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]  # scheme, host, port


class OriginCheck:
    """Refuses, before the socket is accepted, a handshake whose Origin is not
    this site's own: the same scheme, host and port the handshake came to (its
    Host header, which must be in ALLOWED_HOSTS), or one of `trusted` (which
    the settings fill from CSRF_TRUSTED_ORIGINS, the origins Django's CSRF check
    trusts for the dashboard's forms: a site behind a TLS proxy lists its public
    origin there for both).

    The check exists to stop another site's page riding a logged-in user's
    session cookie. Browsers always send Origin on a websocket handshake; a
    program (Hive, curl) sends none and authenticates with a key, so a
    handshake without Origin passes. Ports count: another port of the same
    host is another origin, possibly another (untrusted) program."""

    def __init__(self, application, trusted: list[str]) -> None:
        self.application = application
        self.trusted = [origin for origin in (_parsed(o) for o in trusted) if origin is not None]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not self.allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)

    def allowed(self, scope: dict) -> bool:
        headers = dict(scope.get("headers", []))
        if b"origin" not in headers:
            return True
        origin = _parsed(headers[b"origin"].decode("latin1"))
        if origin is None:  # "null" (a sandboxed page, a file), or not a URL
            return False
        return origin == _own_origin(scope, headers) or any(_trusted_match(origin, t) for t in self.trusted)


def _parsed(url: str) -> Origin | None:
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def _own_origin(scope: dict, headers: dict[bytes, bytes]) -> Origin | None:
    """The origin a page of this site would have: the handshake's scheme and Host, if Django would serve that host."""
    host = headers.get(b"host", b"").decode("latin1")
    domain, port = split_domain_port(host)
    if not domain or not validate_host(domain, allowed_hosts()):
        return None
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return scheme, domain.strip("[]"), int(port) if port else DEFAULT_PORTS[scheme]


def _trusted_match(origin: Origin, trusted: Origin) -> bool:
    scheme, host, port = trusted
    if host.startswith("*."):  # Django's form for every subdomain
        return origin[0] == scheme and origin[2] == port and is_same_domain(origin[1], host[1:])
    return origin == trusted


def allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:  # Django's own default for an empty list in DEBUG
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def allowed_origins() -> list[str]:
    """The origins trusted besides the site's own (config/asgi.py hands them to OriginCheck)."""
    return list(settings.CSRF_TRUSTED_ORIGINS)
