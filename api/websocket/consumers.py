"""Channels websocket consumers: /ws/v1/chat (many concurrent streamed requests
on one socket) and /ws/v1/events (the live feed). Protocols: docs/STREAMING.md.

A socket is authenticated before it is accepted; a refusal is an HTTP 403 on
the handshake. The chat socket keeps the ledger itself (it is not under
Django's middleware): every frame except `cancel` leaves one Usage row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from contextlib import aclosing
from typing import Any, Literal
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from pydantic import ValidationError

from accounts.roles import is_operator
from accounts.services import playground_key_ensure
from accounts.snapshot import KeyInfo
from api import native as native_api
from api.auth import SECRET_PARAMS
from api.errors import internal_error
from gateway import events, pipeline, tool_loop
from gateway.call import Call, new_request_id
from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest, PermissionDenied, RateLimited
from gateway.observability import logs, tracing
from gateway.recording import usage_record
from gateway.relay import TERMINAL, relay

log = logging.getLogger("api.websocket.consumers")

SUBPROTOCOL = "ep.v1"
KEY_SUBPROTOCOL = "ep.key."
# Requests in flight on one socket. With Backpressure each waits on at most one
# outgoing frame, so this also bounds what a socket can hold in memory.
MAX_IN_FLIGHT = 16


# -- authentication (before accept) ----------------------------------------------------------


def _headers(scope: dict) -> dict[str, str]:
    return {name.decode("latin1"): value.decode("latin1") for name, value in scope.get("headers", [])}


def socket_raw_key(scope: dict) -> str | None:
    """The API key from the Authorization header or an `ep.key.<key>` subprotocol."""
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    if SECRET_PARAMS & {name.lower() for name in query}:
        raise AuthenticationFailed("API keys in the URL are refused: send 'Authorization: Bearer <key>' "
                                   "or the 'ep.key.<key>' subprotocol.")
    headers = _headers(scope)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    for offered in scope.get("subprotocols", []):
        if offered.startswith(KEY_SUBPROTOCOL):
            return offered[len(KEY_SUBPROTOCOL):]
    return None


def staff_user(scope: dict):
    user = scope.get("user")
    return user if user is not None and user.is_authenticated and user.is_active and user.is_staff else None


def chosen_subprotocol(scope: dict) -> str | None:
    # Never echo the key subprotocol: answer with the protocol name the client offered.
    return SUBPROTOCOL if SUBPROTOCOL in scope.get("subprotocols", []) else None


async def chat_key(scope: dict) -> KeyInfo:
    raw = socket_raw_key(scope)
    if raw:
        return await pipeline.authenticate(raw)
    user = staff_user(scope)
    if user is None:
        raise AuthenticationFailed("Send an API key, or log in to the dashboard as staff.")
    # A staff user's tries are billed like the playground's: to their dashboard-team key.
    return await sync_to_async(playground_key_ensure)(user)


async def events_allowed(scope: dict) -> None:
    raw = socket_raw_key(scope)
    if raw:
        key = await pipeline.authenticate(raw)
        if "admin" not in key.scopes:
            raise PermissionDenied("The live event feed needs an API key with the 'admin' scope.")
    elif not await sync_to_async(_may_watch_everything)(scope):
        raise AuthenticationFailed("Send an admin API key, or log in to the dashboard as staff or an operator.")


def _may_watch_everything(scope: dict) -> bool:
    """Staff and operators see every team's events; team leads do not (the
    feed is not filtered by team), so their overview refreshes instead."""
    user = scope.get("user")
    return bool(staff_user(scope) or (user is not None and user.is_active and is_operator(user)))


# -- frames ---------------------------------------------------------------------------------


class FrameError(GatewayError):
    code = "invalid_frame"


class ChatFrame(native_api.NativeChatIn):
    type: Literal["chat"]
    id: str | int
    stream: bool = True  # a socket always streams


def frame_decode(text: str | None) -> dict[str, Any]:
    if text is None:
        raise FrameError("Binary frames are not read: send JSON text frames.", code="invalid_json")
    try:
        frame = json.loads(text)
    except ValueError:
        raise FrameError("The frame is not valid JSON.", code="invalid_json") from None
    except RecursionError:  # the parser recurses per level: a deep frame would end the socket (1011)
        raise FrameError("The frame nests JSON deeper than this gateway reads.", code="frame_too_deep") from None
    if not isinstance(frame, dict):
        raise FrameError("A frame must be a JSON object.", code="invalid_json")
    if frame.get("type") not in ("chat", "cancel"):
        raise FrameError(f"Unknown frame type {frame.get('type')!r}: send 'chat' or 'cancel'.", code="unknown_type")
    client_id = frame.get("id")
    valid_id = isinstance(client_id, str | int) and not isinstance(client_id, bool) and str(client_id)
    if not valid_id or len(str(client_id)) > 100:
        raise FrameError("Every frame needs an 'id': a string or integer of at most 100 characters.",
                         code="invalid_id", param="id")
    return frame


def chat_frame_validate(frame: dict[str, Any]) -> ChatFrame:
    try:
        return ChatFrame.model_validate(frame)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"Invalid request: {param}: {first['msg']}", param=param) from None


def client_id_of(text: str | None) -> Any:
    """The frame's id if one can be read, so even a refusal names its request."""
    try:
        client_id = json.loads(text or "").get("id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return client_id if isinstance(client_id, str | int) and not isinstance(client_id, bool) else None


# -- /ws/v1/chat ------------------------------------------------------------------------------

# The chat sockets open in this process: a server shutting down (config/draining.py)
# keeps a socket open until the chats in flight on it have ended and written their rows.
_open_chats: weakref.WeakSet[ChatConsumer] = weakref.WeakSet()


def chats_in_flight() -> int:
    return sum(len(consumer.requests) for consumer in list(_open_chats))



class ChatConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = "ep.no-layer"  # no such layer: a chat socket needs no channel-layer inbox

    async def connect(self) -> None:
        self.requests: dict[Any, tuple[asyncio.Task, Call]] = {}
        self.closing = False
        try:
            self.key = await chat_key(self.scope)
        except GatewayError:
            await self.close()  # before accept: the handshake is refused with 403
            return
        await self.accept(subprotocol=chosen_subprotocol(self.scope))
        _open_chats.add(self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        client_id = client_id_of(text_data)
        try:
            frame = frame_decode(text_data)
            if frame["type"] == "cancel":
                await self._cancel(frame["id"])
            else:
                self._start(frame)
        except GatewayError as error:
            await self._refuse(client_id, error)

    def _start(self, frame: dict[str, Any]) -> None:
        client_id = frame["id"]
        if client_id in self.requests:
            raise FrameError(f"A request with id {client_id!r} is still in flight on this socket.",
                             code="duplicate_id", param="id")
        if len(self.requests) >= MAX_IN_FLIGHT:
            raise RateLimited(f"At most {MAX_IN_FLIGHT} requests may be in flight on one socket.",
                              code="too_many_requests")
        body = chat_frame_validate(frame)
        call = Call(request_id=new_request_id(), endpoint="ws.chat", key=self.key, stream=True)
        task = asyncio.create_task(self._run(client_id, call, body))
        self.requests[client_id] = (task, call)

    async def _cancel(self, client_id: Any) -> None:
        entry = self.requests.get(client_id)
        if entry is None:
            # Not a request, so no row: most likely it already finished.
            await self._emit(client_id, native_api.error_json(
                "", FrameError(f"No request with id {client_id!r} is in flight.", code="unknown_id", param="id")))
            return
        task, call = entry
        call.mark_cancelled("client_cancelled")  # filed before the task stops, so its row says why
        task.cancel()

    async def _refuse(self, client_id: Any, error: GatewayError) -> None:
        call = Call(request_id=new_request_id(), endpoint="ws.chat", key=self.key, stream=True)
        call.fail(error)
        await usage_record(call)
        await self._emit(client_id, native_api.error_json(call.request_id, error))

    async def _run(self, client_id: Any, call: Call, body: ChatFrame) -> None:
        """One chat frame, streamed back as frames through the one relay."""
        logs.bind_request(call.request_id, tracing.trace_id_hex(tracing.span_of(call)))  # ids on log lines
        final = None
        try:
            chat_request = native_api.to_chat_request(body)
            route = await native_api.native_begin(call, body, chat_request)
            loop = await tool_loop.plan(call, route, chat_request)
            stream = pipeline.stream(call, route, chat_request) if loop is None else tool_loop.stream(loop, chat_request)
            async with aclosing(relay(call, stream, lambda event: native_api.event_json(call, event),
                                      on_failure=lambda error: native_api.error_json(call.request_id, error))) as frames:
                async for frame in frames:
                    if frame["type"] in TERMINAL:
                        self.requests.pop(client_id, None)  # the id is free again before the client reads the end
                    await self._emit(client_id, frame)
        except GatewayError as error:  # refused before the stream began
            call.fail(error)
            final = native_api.error_json(call.request_id, error)
        except asyncio.CancelledError:
            # Ours: a cancel frame (filed on the call already), or the socket closed. Report; do not re-raise.
            if not self.closing:
                final = native_api.error_json(call.request_id, native_api.cancelled_error("Cancelled by the client."))
        except Exception:
            log.exception("websocket chat request %s failed", call.request_id)
            call.fail(internal_error())
            final = native_api.error_json(call.request_id, internal_error())
        finally:
            await usage_record(call)  # a no-op when the relay wrote it
            self.requests.pop(client_id, None)
        if final is not None:  # after the row is written, so the end means "recorded"
            await self._emit(client_id, final)

    async def _emit(self, client_id: Any, data: dict) -> None:
        await self.send(text_data=json.dumps({"type": data["type"], "id": client_id, **data},
                                             separators=(",", ":")))

    async def disconnect(self, code: int) -> None:
        self.closing = True
        _open_chats.discard(self)
        tasks = [task for task, _ in self.requests.values()]
        for task in tasks:
            task.cancel()
        if tasks:  # each settles its own row; wait so none is lost when the consumer ends
            await asyncio.wait(tasks, timeout=10)


# -- /ws/v1/events ------------------------------------------------------------------------------


class EventsConsumer(AsyncWebsocketConsumer):
    """Forwards every live event (usage, alert, provider) as {"kind", "data"}.

    A slow reader cannot grow memory: the channel layer holds at most its
    capacity per socket and drops newer events for it (the feed is best effort).
    """

    async def connect(self) -> None:
        self.joined = False
        try:
            await events_allowed(self.scope)
        except GatewayError:
            await self.close()
            return
        await self.channel_layer.group_add(events.GROUP, self.channel_name)
        self.joined = True
        await self.accept(subprotocol=chosen_subprotocol(self.scope))

    async def ep_events(self, message: dict) -> None:
        """A batch from one process (gateway/events.py): one frame per event, in order."""
        for event in message["events"]:
            payload = {"kind": event["kind"], "data": event["data"]}
            await self.send(text_data=json.dumps(payload, separators=(",", ":"), default=str))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass  # the feed is one-way; anything a client sends is ignored

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(events.GROUP, self.channel_name)
