"""The production server's graceful shutdown (config/serve.py), for rolling restarts.

On SIGTERM a worker:
1. stops accepting: its listening socket closes, so a proxy's next connection
   attempt is refused and goes to another instance (nothing was sent yet);
2. lets every request and stream in flight run to its end: an idle keep-alive
   connection is closed, a busy one closes after its response (uvicorn's own);
3. keeps each chat websocket open while a chat on it is in flight, then closes
   it with 1012 ("service restart") so its client reconnects elsewhere;
4. after the grace period (EP_SHUTDOWN_GRACE_SECONDS, `--grace`), cuts what
   still runs, as if its client had gone: a cut request or stream still writes
   its Usage row (the relay and the websocket consumer record however a call ends);
5. flushes the ledger writer before the process exits.

uvicorn's own shutdown closes websockets at step 2, cutting their chats mid-answer.
"""

from __future__ import annotations

import asyncio
import logging
import time

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("config.serve")

POLL_SECONDS = 0.05
# What is left of the grace once the drain ends, at least: websockets closed at
# that point need a moment for their consumers to finish.
LAST_STEP_SECONDS = 1.0


def _is_websocket(connection) -> bool:
    return isinstance(connection, WebSocketsSansIOProtocol)


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets=None) -> None:
        from api.websocket.consumers import chats_in_flight
        from budgets.ledger import writer

        grace = float(self.config.timeout_graceful_shutdown or 0)
        ends = time.monotonic() + grace
        log.info("draining: no new connections; in-flight requests have %.0f s to finish", grace)
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            if not _is_websocket(connection):
                connection.shutdown()
        while time.monotonic() < ends and not self.force_exit and (
                chats_in_flight() or any(not _is_websocket(c) for c in self.server_state.connections)):
            await asyncio.sleep(POLL_SECONDS)
        # Past the grace, an HTTP request still running is cut as if its client
        # left: the application sees the disconnect, cancels the call and writes
        # its row (the path a departed client takes), rather than having its
        # task cancelled from outside, which would orphan the call's own tasks.
        for connection in list(self.server_state.connections):
            if not _is_websocket(connection) and connection.transport is not None:
                connection.transport.close()
        # uvicorn's shutdown for the rest: websockets closed (1012; each consumer
        # cancels its chats and waits for their rows), then the tasks left
        # waited for a moment more, then cancelled.
        self.config.timeout_graceful_shutdown = max(LAST_STEP_SECONDS, ends - time.monotonic())
        await super().shutdown(sockets)
        cancelled = list(self.server_state.tasks)
        if cancelled:  # each records its row as it unwinds
            await asyncio.wait(cancelled, timeout=LAST_STEP_SECONDS * 5)
        await asyncio.to_thread(writer.flush)
        # Drained, not interrupted: exit 0 (uvicorn would re-raise the SIGTERM
        # once served, and the process would die of it before its atexit hooks).
        self._captured_signals.clear()
