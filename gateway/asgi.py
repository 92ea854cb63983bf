"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets pass the origin check, then the session (for logged-in staff in the
dashboard), then the URL router; consumers authenticate before they accept.
Both protocols go through Backpressure, so a slow client pauses its stream.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (after Django setup)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from gateway.backpressure import Backpressure  # noqa: E402
from gateway.routing import OriginCheck, allowed_origins, websocket_urlpatterns  # noqa: E402

application = Backpressure(ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": OriginCheck(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), allowed_origins()),
}))
