"""The batch worker (`manage.py run_batches`): runs the requests of batch jobs
through the pipeline, at most `concurrency` at a time, each as the key that
created its batch and tagged with it (run_id = the batch id, step = the
request's custom_id), each leaving one Usage row.

Exactly once, across worker deaths. Everything is in the database, so any
worker can pick up where another stopped:
1. A worker claims a request (a conditional update) under a lease it renews
   while it holds it; a lease that runs out means its worker died.
2. It runs the request, then saves the answer together with the Usage row it
   is about to write (state `answered`) -- before writing that row.
3. It writes the row through the ledger's replay path, which skips a row the
   ledger already has for the request id (ids are fixed per request), then
   marks the request `done`.
A request whose worker died while `running` has no row yet: it is run once
more (a third time it fails as `batch_worker_lost`). One that died
`answered` only has its saved row written. Either way the ledger gets one row.
A worker that lost its claim (it stalled past its lease) saves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from accounts.snapshot import KeyInfo, load_key
from budgets import spool
from budgets.alerts import alerts_dispatch
from budgets.ledger import usage_replay
from budgets.models import Budget
from budgets.ratelimit import rate_limit_add_tokens
from budgets.snapshot import budget_info
from gateway import events
from gateway.batches import batches_advance, new_id
from gateway.call import Call
from gateway.errors import AuthenticationFailed, GatewayError, RateLimited, ServiceUnavailable
from gateway.models import BatchRequest
from gateway.observability import metrics
from gateway.recording import usage_event, usage_row_of

log = logging.getLogger("gateway.batches")

# Runs one request body of an endpoint on the call; returns the answer's body,
# raises GatewayError for a refusal or failure (the handlers are the API's:
# settings.EP_BATCH_HANDLERS).
Handler = Callable[[Call, dict], Awaitable[dict]]
MAX_RUNS = 2  # a request whose worker died is run once more, never a third time
# Refusals that say "not now" (a rate limit; a store the gateway needs is down):
# batch work can wait, so the request goes back instead of failing.
NOT_NOW = (RateLimited, ServiceUnavailable)
STORE_DOWN_PAUSE = 5.0  # seconds, when the refusal names no Retry-After


def _thread(function):
    return sync_to_async(function, thread_sensitive=False)


@dataclass(slots=True)
class Claimed:
    id: int
    batch_id: str
    endpoint: str
    custom_id: str
    body: dict
    request_id: str
    state: str  # "running": run it; "answered": only its row is left to write
    attempts: int
    ledger_line: str
    key_hash: str | None


class WorkerLost(GatewayError):
    """A request whose workers died under it twice: failed, not run a third time."""

    status = 500
    type = "api_error"
    code = "batch_worker_lost"

    @property
    def usage_status(self) -> str:
        return "error"


# -- claims ---------------------------------------------------------------------------------


def requests_claim(*, worker: str, limit: int, lease: float) -> list[Claimed]:
    """Take up to `limit` requests: unstarted ones of running batches, and those
    whose worker's lease ran out. Each is taken by a conditional update, so two
    workers never hold the same request."""
    now = timezone.now()
    startable = Q(state="pending", batch__status="in_progress", batch__expires_at__gt=now)
    orphaned = Q(state__in=("running", "answered"), lease_until__lt=now)
    candidates = (BatchRequest.objects.filter(startable | orphaned).select_related("batch__api_key")
                  .order_by("id")[:limit * 2])
    claimed = []
    for item in candidates:
        state = "answered" if item.state == "answered" else "running"
        attempts = item.attempts + (state == "running")
        if BatchRequest.objects.filter(id=item.id, state=item.state, claim=item.claim, attempts=item.attempts).update(
                state=state, claim=worker, attempts=attempts, lease_until=now + timedelta(seconds=lease)):
            api_key = item.batch.api_key
            claimed.append(Claimed(item.id, item.batch_id, item.batch.endpoint, item.custom_id, item.body,
                                   item.request_id, state, attempts, item.ledger_line,
                                   api_key.key_hash if api_key else None))
            if len(claimed) == limit:
                break
    return claimed


def leases_renew(*, worker: str, ids: list[int], lease: float) -> int:
    return BatchRequest.objects.filter(id__in=ids, claim=worker, state__in=("running", "answered")).update(
        lease_until=timezone.now() + timedelta(seconds=lease))


def request_answered(*, item: Claimed, worker: str, status_code: int, response: dict, ledger_line: str) -> bool:
    """Save the answer and the row to write, if this worker still holds the request."""
    return bool(BatchRequest.objects.filter(id=item.id, claim=worker, state="running", attempts=item.attempts).update(
        state="answered", status_code=status_code, response=response, ledger_line=ledger_line))


def request_release(*, item: Claimed, worker: str) -> None:
    """Put a request back as it was before this claim (it was not run: rate-limited)."""
    BatchRequest.objects.filter(id=item.id, claim=worker, state="running", attempts=item.attempts).update(
        state="pending", claim="", lease_until=None, attempts=item.attempts - 1)


def request_done(*, item: Claimed, worker: str) -> None:
    BatchRequest.objects.filter(id=item.id, claim=worker, state="answered").update(
        state="done", ledger_line="", lease_until=None)


def work_remains() -> bool:
    return BatchRequest.objects.filter(state__in=("pending", "running", "answered")).filter(
        Q(state="pending", batch__status="in_progress") | ~Q(state="pending")).exists()


# -- the worker -----------------------------------------------------------------------------


class BatchWorker:
    def __init__(self, *, handlers: dict[str, Handler], concurrency: int, lease_seconds: float,
                 poll_seconds: float) -> None:
        self.handlers = handlers
        self.concurrency = concurrency
        self.lease = lease_seconds
        self.poll = poll_seconds
        self.id = f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id('')[:8]}"
        self.in_flight: set[asyncio.Task] = set()
        self.held: set[int] = set()  # the requests of the tasks in flight: only their leases are renewed
        self.stopping = False
        self.resume_at = 0.0  # loop time before which nothing new is claimed (a rate limit said so)

    async def run(self, *, until_idle: bool = False) -> None:
        """Work until stopped (`stop`), or with `until_idle` until no batch has
        anything left to do; requests in flight finish first."""
        log.info("batch worker %s started (concurrency %d)", self.id, self.concurrency)
        heartbeat = asyncio.create_task(self._renew_leases())
        try:
            await self._work(until_idle)
        finally:
            heartbeat.cancel()
        log.info("batch worker %s stopped", self.id)

    async def _renew_leases(self) -> None:
        # Its own task, so that a busy turn of the main loop never lets a lease lapse.
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await _thread(leases_renew)(worker=self.id, ids=list(self.held), lease=self.lease)
            except DatabaseError:
                log.warning("batch worker %s could not renew its leases", self.id)

    async def _work(self, until_idle: bool) -> None:
        while not self.stopping:
            try:
                await _thread(batches_advance)()
                claimed = await self._claim()
                if until_idle and not claimed and not self.in_flight and not await _thread(work_remains)():
                    await _thread(batches_advance)()
                    break
            except DatabaseError as error:  # the database is down: wait for it, holding nothing new
                log.warning("batch worker %s: database unreachable (%s)", self.id, str(error)[:200])
                claimed = []
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(self.poll)
        if self.in_flight:
            await asyncio.wait(self.in_flight)

    def stop(self) -> None:
        self.stopping = True

    async def _claim(self) -> list[Claimed]:
        free = self.concurrency - len(self.in_flight)
        if free <= 0 or asyncio.get_running_loop().time() < self.resume_at:
            return []
        claimed = await _thread(requests_claim)(worker=self.id, limit=free, lease=self.lease)
        for item in claimed:
            self.held.add(item.id)
            task = asyncio.create_task(self._handle(item))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return claimed

    async def _handle(self, item: Claimed) -> None:
        try:
            await (self._settle(item) if item.state == "answered" else self._run(item))
        except Exception:  # noqa: BLE001 - its lease lapses and the request is taken up again
            log.exception("batch %s: request %s interrupted", item.batch_id, item.custom_id)
        finally:
            self.held.discard(item.id)

    async def _run(self, item: Claimed) -> None:
        call = Call(request_id=item.request_id, endpoint=_endpoint_name(item.endpoint),
                    key=await _key(item.key_hash), run_id=item.batch_id, step=item.custom_id)
        try:
            status, body = await self._answer(call, item)
        except NOT_NOW as refusal:
            # The request goes back, unbilled (it was refused before any provider
            # or budget), and this worker pauses.
            await _thread(request_release)(item=item, worker=self.id)
            pause = float(refusal.headers.get("Retry-After") or STORE_DOWN_PAUSE)
            self.resume_at = max(self.resume_at, asyncio.get_running_loop().time() + pause)
            log.info("batch %s: %s; pausing %.0f s", item.batch_id,
                     "rate-limited" if isinstance(refusal, RateLimited) else refusal.code, pause)
            return
        if call.key is None:
            log.warning("batch %s: the key that created it was deleted; %s not run", item.batch_id, item.custom_id)
        line = spool.encode(usage_row_of(call), [b.id for b in call.budgets]).decode() if call.key else ""
        if not await _thread(request_answered)(item=item, worker=self.id, status_code=status, response=body,
                                               ledger_line=line):
            log.warning("batch %s: lost the claim on %s; another worker runs it", item.batch_id, item.custom_id)
            return
        item.ledger_line = line
        if await self._settle(item) and call.admission is not None:
            await rate_limit_add_tokens(call.admission, call.usage.total_tokens)

    async def _answer(self, call: Call, item: Claimed) -> tuple[int, dict]:
        """The request's status code and body, as its output line carries them."""
        try:
            key = call.key
            if key is None or key.revoked or (key.expires_at and key.expires_at <= timezone.now()):
                raise AuthenticationFailed("The API key that created this batch was revoked, has expired, "
                                           "or was deleted.")
            if item.attempts > MAX_RUNS:
                raise WorkerLost("The workers running this request stopped twice before it finished; "
                                 "it was not run again.")
            return 200, await self.handlers[item.endpoint](call, item.body)
        except NOT_NOW:
            raise
        except GatewayError as error:
            call.fail(error)
            return error.status, error_body(error, call.request_id)
        except Exception:  # noqa: BLE001 - a bug fails this request, never the worker
            log.exception("batch %s: request %s failed", item.batch_id, item.custom_id)
            error = GatewayError("Internal error; quote the request id when reporting it.", status=500,
                                 code="internal_error")
            call.fail(error)
            return 500, error_body(error, call.request_id)

    async def _settle(self, item: Claimed) -> bool:
        """Write the request's saved Usage row (unless the ledger already has it),
        then mark it done. False if the database did not take it: the request
        stays `answered`, and is settled when its lease runs out."""
        if item.ledger_line:
            try:
                await ledger_write(item.ledger_line)
            except DatabaseError:
                log.warning("batch %s: usage row of %s not written; retried later", item.batch_id, item.custom_id)
                return False
        await _thread(request_done)(item=item, worker=self.id)
        return True


async def ledger_write(line: str) -> None:
    """Write one saved Usage row and settle its budgets, as the ledger would
    have; a row the ledger already has is skipped (budgets.ledger.usage_replay)."""
    entry = spool.decode(line.encode())
    budgets = await _thread(lambda: [budget_info(b) for b in
                                     Budget.objects.filter(id__in=entry.budget_ids).select_related("persona")])()
    crossings = await asyncio.wrap_future(usage_replay(row=entry.row, budgets=budgets))
    if crossings is None:
        return  # already in the ledger: the worker before us wrote it
    metrics.observe_usage(entry.row)
    await events.publish("usage", usage_event(entry.row))
    for alert in await _thread(alerts_dispatch)(crossings) if crossings else ():
        await events.publish("alert", alert)


async def _key(key_hash: str | None) -> KeyInfo | None:
    return await _thread(load_key)(key_hash) if key_hash else None


def _endpoint_name(url: str) -> str:
    return url.strip("/").replace("/", ".")[:40]  # as the API names its own calls


def error_body(error: GatewayError, request_id: str) -> dict:
    """OpenAI's error envelope (api/errors.py renders the same for HTTP)."""
    return {"error": {"type": error.type, "code": error.code, "message": error.message, "param": error.param,
                      "request_id": request_id}}
