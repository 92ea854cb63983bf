"""The ledger guarantee in one place: every authenticated API request leaves
exactly one Usage row, whatever path it took out (answer, refusal, error)."""

from __future__ import annotations

import asyncio

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from api import errors
from api.paths import is_api_path, request_id_of
from budgets import sweeper
from gateway.call import Call
from gateway.observability import logs, metrics, tracing
from gateway.recording import usage_record


class LedgerMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request):
        if not is_api_path(request.path):
            return await self.get_response(request)
        # From the process's first request on: replays what the ledger spooled
        # while the database was down, this process's or a dead one's.
        sweeper.ensure_started()
        request_id = request_id_of(request)
        # Observability: the request span, the request id on each log line, in flight.
        span = tracing.request_start(method=request.method, path=request.path, request_id=request_id,
                                     headers=request.headers)
        logs.bind_request(request_id, tracing.trace_id_hex(span))
        in_flight = request.path != "/metrics"  # a scrape does not count itself
        if in_flight:
            metrics.in_flight_enter()
        try:
            response = await self.get_response(request)
        except BaseException:  # cancelled: the client went away
            if in_flight:
                metrics.in_flight_exit()
            tracing.http_end(span, 499)
            await _record_disconnect(request)
            raise
        if response.status_code == 405 and not response.get("Content-Type", "").startswith("application/json"):
            response = await errors.method_not_allowed(request, response)  # ninja's is plain text
        if not response.has_header("X-Request-ID"):
            response["X-Request-ID"] = request_id
        call: Call | None = getattr(request, "ep_call", None)
        for name, value in (call.response_headers.items() if call is not None else ()):
            response[name] = value
        for name, value in tracing.response_headers(span).items():
            response[name] = value
        if call is not None:
            tracing.span_of(call)  # the call ends the span when it is recorded
        # A stream records its own row when it ends (it may outlive this call).
        if call is not None and not call.recorded and not getattr(response, "streaming", False):
            _file_outcome(call, response.status_code)
            await usage_record(call)
        if call is None:
            tracing.http_end(span, response.status_code)
        if in_flight:
            metrics.in_flight_exit(response)  # a stream stays in flight until its body closes
        return response


async def _record_disconnect(request) -> None:
    """The client went away before the answer was ready (Django cancels the
    view): the request still gets its one row, with what it had used so far."""
    call: Call | None = getattr(request, "ep_call", None)
    if call is None or call.recorded:
        return
    call.mark_cancelled()
    await asyncio.shield(usage_record(call))


def _file_outcome(call: Call, status: int) -> None:
    call.http_status = status
    if status >= 400 and call.status == "ok":
        call.status = "refused" if status < 500 else "error"
        call.error_code = call.error_code or f"http_{status}"
