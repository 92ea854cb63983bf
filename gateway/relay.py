"""The one loop every streamed answer leaves through, in any wire format.

OpenAI and Anthropic SSE, the native SSE, the websocket and the playground each
give `relay` a `render` for their format; relay owns what must hold however a
stream ends (done, a provider error, the client gone, a route that fails before
its first event): the upstream call is closed, and the request's one Usage row
is written with the tokens counted so far, before the client sees the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway import pipeline
from gateway.call import Call, Route
from gateway.errors import GatewayError
from gateway.recording import usage_record
from providers.types import ChatRequest, StreamEvent

TERMINAL = ("done", "error")
_NOT_READ = StreamEvent("usage")  # a marker: relay reads the first event itself


class StreamEnded(GatewayError):
    status = 502
    type = "upstream_error"
    code = "stream_ended"


async def stream_start(call: Call, route: Route, request: ChatRequest) -> tuple[AsyncIterator[StreamEvent],
                                                                               StreamEvent | None]:
    """Start the stream and wait for its first event. An HTTP surface calls this
    before it answers, so a route where every step fails before any token is a
    proper HTTP error (raised here) rather than a 200 stream that fails."""
    events = pipeline.stream(call, route, request)
    return events, await anext(events, None)


async def relay(call: Call, events: AsyncIterator[StreamEvent], render: Callable[[StreamEvent], Any], *,
                first: StreamEvent | None = _NOT_READ, opening: Any = None,
                on_failure: Callable[[GatewayError], Any] | None = None) -> AsyncIterator[Any]:
    """The stream as the client receives it: `opening`, then `render(event)` for
    each event up to the terminal one. A GatewayError (the route failed before a
    token) or a stream that ends without its terminal event is rendered by
    `on_failure` when given (the answer already started: the error goes in band),
    else raised."""
    try:
        if opening is not None:
            yield opening
        event = await anext(events, None) if first is _NOT_READ else first
        while event is not None:
            final = event.type in TERMINAL
            if final:
                await usage_record(call)  # the row exists before the client sees the end
            yield render(event)
            if final:
                return
            event = await anext(events, None)
        raise StreamEnded("The stream ended before it finished.")
    except GatewayError as error:
        if on_failure is None:
            raise
        call.fail(error)
        await usage_record(call)
        yield on_failure(error)
    except BaseException:  # the client went away (cancelled) or the loop is stopping
        call.mark_cancelled()
        raise
    finally:
        await events.aclose()
        await usage_record(call)
