"""Billing a request as it goes, and writing its one Usage row when it ends.

`settle` keeps a call's usage and cost current (so a cut or cancelled stream
is billed for what it got); `usage_record` writes the row through the ledger's
writer, settles the budgets, and tells metrics, tracing and the live feed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from asgiref.sync import sync_to_async
from django.db import DatabaseError

from budgets import pricing, sweeper
from budgets.alerts import alerts_dispatch
from budgets.ledger import usage_settle_async
from budgets.models import Usage as UsageRow
from budgets.ratelimit import rate_limit_add_tokens
from gateway import events
from gateway.call import Call
from gateway.errors import UpstreamFailed
from gateway.observability import metrics, tracing
from personas.snapshot import StepInfo
from providers.types import ChatRequest, StreamEvent, Usage

log = logging.getLogger("gateway.pipeline")


def account(call: Call, step: StepInfo, request: ChatRequest, event: StreamEvent) -> None:
    """Keep the call's usage current, so a cut or cancelled stream is billed for what it got."""
    if event.type in ("delta", "tool_call"):
        call.mark_first_token()
        call.usage.output_tokens += estimate_tokens(event.text or event.arguments)
        if not call.usage.input_tokens:
            call.usage.input_tokens = estimate_tokens("".join(m.text() for m in request.messages))
        settle(call, step, call.usage)
    elif event.type == "usage" and event.usage is not None:
        settle(call, step, event.usage)
    elif event.type == "error":
        call.fail(UpstreamFailed(event.error, provider=step.provider.name, attempts=call.attempts))


def estimate_tokens(text: str) -> int:
    # ~4 characters a token for English; only used until the provider reports.
    return max(1, len(text) // 4) if text else 0


def settle(call: Call, step: StepInfo, usage: Usage) -> None:
    call.usage = replace(usage)
    info = step.provider.models.get(step.model)
    call.cost = pricing.cost_of(kind=step.provider.kind, model=step.model, info=info, usage=usage)
    if usage.cached_tokens or usage.cache_write_tokens:
        call.saved = pricing.prompt_cache_savings(kind=step.provider.kind, model=step.model, info=info, usage=usage,
                                                  cost=call.cost)


def _usage_row(call: Call) -> UsageRow:
    return UsageRow(
        request_id=call.request_id,
        team_id=call.key.team_id if call.key else None,
        api_key_id=call.key.id if call.key else None,
        persona=call.persona[:50],
        provider=call.provider,
        model=call.model[:200],
        endpoint=call.endpoint,
        stream=call.stream,
        status=call.status,
        http_status=call.http_status,
        error_code=call.error_code,
        error_message=call.error_message,
        input_tokens=call.usage.input_tokens,
        output_tokens=call.usage.output_tokens,
        cached_tokens=call.usage.cached_tokens,
        reasoning_tokens=call.usage.reasoning_tokens,
        cost_usd=call.cost,
        cache_hit=call.cache_hit,
        saved_usd=call.saved,
        latency_ms=int((time.perf_counter() - call.started) * 1000),
        ttft_ms=call.ttft_ms,
        attempts=call.attempts,
        attempt_log=call.attempt_log,
        trace_id=call.trace_id,
        run_id=call.run_id[:100],
        step=call.step[:100],
    )


async def _settle_and_alert(call: Call) -> tuple[UsageRow, list[dict]]:
    row = _usage_row(call)
    # The ledger's writer thread batches this with other requests' writes and
    # resumes us after its commit, or, with the database down, once the row is
    # in the spool on local disk (budgets/spool.py): durable before we answer.
    crossings = await usage_settle_async(row=row, budgets=call.budgets)
    if not crossings:
        return row, []
    try:
        return row, await sync_to_async(alerts_dispatch, thread_sensitive=False)(crossings)
    except DatabaseError:  # the row and its alert rows are committed; only the notices are not sent
        log.warning("alerts crossed by %s not dispatched (database unreachable)", call.request_id)
        return row, []


def usage_event(row) -> dict:
    """What the live feed shows of a request: never a key, a prompt or an answer."""
    return {
        "request_id": row.request_id, "created_at": row.created_at.isoformat(), "team_id": row.team_id,
        "persona": row.persona, "provider": row.provider, "model": row.model, "status": row.status,
        "http_status": row.http_status, "error_code": row.error_code, "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens, "cost_usd": str(row.cost_usd), "latency_ms": row.latency_ms,
        "cache_hit": row.cache_hit, "saved_usd": str(row.saved_usd),
        "run_id": row.run_id, "step": row.step,
    }


async def usage_record(call: Call) -> None:
    """Write the call's one Usage row and settle its budgets; safe to call twice,
    survives cancellation, then tells the live feed (and fires alerts)."""
    if call.recorded or call.key is None:
        return
    call.recorded = True
    tracing.span_of(call)  # sets call.trace_id for the row
    try:
        # shield: a client that disconnects while we write must not lose the row.
        row, alerts = await asyncio.shield(_settle_and_alert(call))
    except DatabaseError:
        # The database refused the row and the spool could not keep it either
        # (full, or its disk failed): the one case a row is lost, said loudly.
        log.error("ledger write failed for %s (%s): not recorded", call.request_id, call.status)
        metrics.observe_usage(_usage_row(call))  # counted all the same (nothing is saved)
        await tracing.request_end(call)
        return
    metrics.observe_usage(row)
    await tracing.request_end(call)
    if call.admission is not None and not call.cache_hit:  # a hit used no provider's tokens
        await rate_limit_add_tokens(call.admission, call.usage.total_tokens)
    await events.publish("usage", usage_event(row))
    for alert in alerts:
        await events.publish("alert", alert)
    if alerts:
        sweeper.kick()
    else:
        sweeper.ensure_started()




def usage_row_of(call: Call) -> UsageRow:
    """The row `usage_record` would write for the call, for a caller that keeps
    it before writing it (a batch request: gateway/batch_worker.py)."""
    return _usage_row(call)
