"""Websocket URL routes and the origin check in front of them."""

from __future__ import annotations

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path

from api.websocket import consumers

websocket_urlpatterns = [
    path("ws/v1/chat", consumers.ChatConsumer.as_asgi()),
    path("ws/v1/events", consumers.EventsConsumer.as_asgi()),
]


class OriginCheck(OriginValidator):
    """channels' AllowedHostsOriginValidator, except that a handshake without an
    Origin header passes. Browsers always send Origin on a websocket handshake,
    and the check exists to stop another site's page riding a logged-in user's
    session cookie; a program (Hive, curl) sends none and authenticates with a
    key. A foreign Origin is refused before the socket is accepted."""

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or self.validate_origin(parsed_origin)


def allowed_origins() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:  # Django's own default for an empty list in DEBUG
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts + list(settings.CSRF_TRUSTED_ORIGINS)
