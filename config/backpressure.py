"""Back-pressure for streamed responses under daphne.

ASGI's only back-pressure signal is `await send(...)`: uvicorn makes it wait
while the client's socket is backed up, daphne does not — it hands every
message to Twisted, which buffers without bound for a client that reads
slowly. This ASGI wrapper restores the signal: it registers a Twisted push
producer on the connection, and each streamed send waits while Twisted says
its write buffer is full (over 64 KiB). A stream that waits stops pulling from
the provider, so a slow client slows its provider instead of growing memory.

Under any other server (no Twisted connection found) sends pass straight
through, and that server's own `send` applies back-pressure.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

log = logging.getLogger("config.backpressure")
STREAMED = ("websocket.send", "http.response.body")


class Gate:
    """A Twisted IPushProducer: Twisted calls these from the reactor, which under
    daphne is the asyncio loop itself, so an asyncio.Event is safe here."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's interface)
        self.writable.clear()

    def resumeProducing(self) -> None:  # noqa: N802
        self.writable.set()

    def stopProducing(self) -> None:  # noqa: N802 - connection lost: let sends through to be dropped
        self.writable.set()


def _http_channel(send) -> Any | None:
    """The twisted.web HTTPChannel behind a daphne `send`, or None elsewhere.

    daphne's send is partial(server.handle_reply, protocol). For HTTP the
    protocol is a twisted Request (`.channel`); for a websocket it is upgraded
    from an HTTP connection whose channel stays the transport's producer.
    """
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    channel = getattr(protocol, "channel", None)
    if channel is None:
        channel = getattr(getattr(protocol, "transport", None), "producer", None)
    return channel if hasattr(channel, "registerProducer") and hasattr(channel, "_requestProducer") else None


def gate_open(send) -> tuple[Gate, Any] | None:
    channel = _http_channel(send)
    if channel is None or channel._requestProducer is not None:
        return None
    gate = Gate()
    channel.registerProducer(gate, True)
    return gate, channel


def gate_close(opened: tuple[Gate, Any] | None) -> None:
    if opened is not None and opened[1]._requestProducer is opened[0]:
        opened[1].unregisterProducer()


class Backpressure:
    """ASGI middleware: streamed sends wait while the client's buffer is full."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        opened: tuple[Gate, Any] | None = None
        tried = False

        async def gated_send(message: dict) -> None:
            nonlocal opened, tried
            # Only streams need it: an HTTP body sent in one piece is already bounded.
            if message["type"] in STREAMED and (message["type"] == "websocket.send" or message.get("more_body")):
                if not tried:
                    tried = True
                    opened = _try_open(send)
                if opened is not None:
                    await opened[0].writable.wait()
            await send(message)

        try:
            await self.app(scope, receive, gated_send)
        finally:
            gate_close(opened)


def _try_open(send) -> tuple[Gate, Any] | None:
    try:
        return gate_open(send)
    except Exception:  # an unexpected Twisted shape: stream without the gate rather than fail
        log.warning("could not attach back-pressure to this connection", exc_info=True)
        return None
