"""Server-side tool execution: the platform runs the tools a persona's model calls.

When a request's persona has PersonaTools.execute on (or a Responses request
names a tool server with `tools: [{"type": "mcp", ...}]`), `plan`
(gateway/tool_plan.py) offers the model the tools this key may use as
function tools named `<server>__<tool>`.
`complete` / `stream` then call the model, run the tool calls it makes through
tools/registry.call_tool (permission, schema, time and size caps, the call
log), append the assistant turn and the results, and call it again until it
answers without tool calls.

Every model call is its own Call through the same pipeline (begin, admit,
complete or stream): its own Usage row, reserved against budgets like any
call, tagged with the run. The first model call is the request's own Call;
later ones are `<request_id>.2`, `.3`, ... Each row is written as soon as its
model call ends, so each says how that call went. Afterwards the request's Call
shows the whole loop (summed usage and cost, the last provider and model) for
the answer and its headers; its row is already written and does not change.

Caps (PersonaTools): max_steps model calls, max_tool_seconds of tool time,
max_cost_usd of model cost. A cap ends the loop with an error (ToolLoopStopped,
422, code tool_steps_exceeded / tool_time_exceeded / tool_cost_exceeded): a
chain of tool calls without its final answer is not an answer, and the work
done so far is billed and visible in the run. The model call a cap stopped is
a row of its own (status refused, that code, no cost), so the run shows why it
ended. The cost cap is checked before each model call against what the loop
has spent: one call may take it past the cap, the next is refused.

A request that sends its own function tools to a persona that executes tools
is refused (400 client_tools_not_supported): the caller would have to run part
of a turn whose other part the platform ran, and names could collide.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from gateway import pipeline, relay
from gateway.call import Call, Route
from gateway.errors import GatewayError
from gateway.recording import usage_record
from gateway.tool_asks import asker
from gateway.tool_plan import (  # the faces reach the plan through this module too
    McpServerAsk,
    ToolLoop,
    ToolProgress,
    ToolRun,
    plan,
    progress_json,
)
from providers.types import ChatRequest, ChatResult, Message, StreamEvent, ToolCall
from tools import registry
from tools.types import ToolContext

__all__ = ["McpServerAsk", "ToolLoop", "ToolLoopStopped", "ToolProgress", "ToolRun", "answer", "complete",
           "loop_headers", "plan", "progress_json", "stream", "stream_start"]


class ToolLoopStopped(GatewayError):
    """A cap of the persona's tool settings ended the loop before a final answer."""

    status = 422
    type = "tool_loop_error"


# -- model calls ------------------------------------------------------------------------


def _next_call(loop: ToolLoop) -> Call:
    first = loop.call
    return Call(request_id=f"{first.request_id}.{len(loop.steps) + 1}", endpoint=first.endpoint, key=first.key,
                stream=first.stream, timeout=first.timeout)


async def _begun(loop: ToolLoop, call: Call, request: ChatRequest) -> Route:
    """The route for this model call: the request's own was begun by its face."""
    loop.steps.append(call)
    if call is loop.call:
        return loop.route
    return await pipeline.begin(call, request, model=loop.route.label, run_id=loop.run_id, step=loop.call.step,
                                timeout=call.timeout, cache_mode=loop.call.cache_mode)


async def _failed(loop: ToolLoop, call: Call, error: GatewayError) -> None:
    """File the failure on the model call's row, and on the request's Call for the answer."""
    call.fail(error)
    await usage_record(call)
    if call is not loop.call:
        loop.call.fail(error)


async def _ended(loop: ToolLoop, call: Call) -> None:
    """The model call's row, written now; the loop's totals shown on the request's Call."""
    await usage_record(call)
    usage = loop.usage
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cache_write_tokens"):
        setattr(usage, name, getattr(usage, name) + getattr(call.usage, name))
    loop.cost += call.cost
    shown = loop.call
    shown.usage, shown.cost = replace(usage), loop.cost
    shown.provider, shown.model = call.provider, call.model


async def _stop_if_capped(loop: ToolLoop) -> None:
    """Refuse the next model call when a cap is reached: a row of its own, then the error."""
    caps = loop.caps
    error = None
    if len(loop.steps) >= caps.max_steps:
        error = ToolLoopStopped(f"The tool loop reached its limit of {caps.max_steps} model calls "
                                "(the persona's max_steps) before a final answer.", code="tool_steps_exceeded")
    elif caps.max_cost_usd is not None and loop.cost >= caps.max_cost_usd:
        error = ToolLoopStopped(f"The tool loop spent ${loop.cost:.6f}, its limit is ${caps.max_cost_usd:.6f} "
                                "(the persona's max_cost_usd), before a final answer.", code="tool_cost_exceeded")
    elif loop.tool_seconds >= caps.max_tool_seconds:
        error = ToolLoopStopped(f"The tool loop's tools ran {loop.tool_seconds:.1f} s, its limit is "
                                f"{caps.max_tool_seconds:g} s (the persona's max_tool_seconds), before a final "
                                "answer.", code="tool_time_exceeded")
    if error is not None:
        call = _next_call(loop)
        call.run_id, call.step, call.persona = loop.run_id, loop.call.step, loop.call.persona
        loop.steps.append(call)
        await _failed(loop, call, error)
        raise error


# -- tools ----------------------------------------------------------------------------------


async def _run_tools(loop: ToolLoop, call: Call, calls: list[ToolCall], *,
                     parallel: bool) -> AsyncIterator[ToolProgress]:
    """Run the turn's tool calls within the loop's tool time: at once (a model
    that asks for several in one turn means them as independent, as OpenAI's
    parallel tool calls are), or one after another when the request said
    parallel_tool_calls false. The turn spends its wall time of the loop's tool
    time; each call may run for what was left when the turn began. Results go
    back to the model in the order it asked; progress is told as calls end."""
    time_left = max(0.0, loop.caps.max_tool_seconds - loop.tool_seconds)
    runs = []
    for tool_call in calls:
        run = ToolRun(step=len(loop.steps), call_id=tool_call.id, name=tool_call.name,
                      arguments=tool_call.arguments, run_id=loop.run_id)
        loop.transcript.append(run)
        runs.append((run, tool_call))
    began = time.monotonic()
    if not parallel or len(runs) == 1:
        for run, tool_call in runs:
            yield ToolProgress("tool_started", run)
            await _tool_run(loop, call, run, tool_call, max(0.0, time_left - (time.monotonic() - began)))
            yield ToolProgress("tool_finished", run)
    else:
        for run, _ in runs:
            yield ToolProgress("tool_started", run)
        tasks = [asyncio.ensure_future(_tool_run(loop, call, run, tool_call, time_left)) for run, tool_call in runs]
        try:
            for finished in asyncio.as_completed(tasks):
                yield ToolProgress("tool_finished", await finished)
        finally:
            for task in tasks:  # a client gone mid-turn: the calls still running are cancelled
                task.cancel()
    loop.tool_seconds += time.monotonic() - began


async def _tool_run(loop: ToolLoop, call: Call, run: ToolRun, tool_call: ToolCall, time_left: float) -> ToolRun:
    ctx = ToolContext(key=call.key, request_id=call.request_id, run_id=loop.run_id, persona=loop.call.persona,
                      source="loop", ask=asker(call.key, run_id=loop.run_id), time_left=time_left)
    started = time.monotonic()
    result = await registry.call_tool(tool_call.name, tool_call.arguments, ctx, allowed=loop.tools)
    elapsed = time.monotonic() - started
    run.status = ("timeout" if result.error_code == "tool_timeout" else "refused" if result.error_code in
                  ("unknown_tool", "invalid_arguments") else "error") if result.is_error else "ok"
    run.error_code, run.output, run.duration_ms = result.error_code, result.content, int(elapsed * 1000)
    return run


def _next_request(request: ChatRequest, content: str | None, calls: list[ToolCall],
                  runs: list[ToolRun]) -> ChatRequest:
    """The conversation so far, plus the assistant's tool calls and their results. A
    named or required tool_choice holds for the first model call only, or the loop
    could never end."""
    messages = [*request.messages, Message(role="assistant", content=content or None, tool_calls=list(calls))]
    messages += [Message(role="tool", content=run.output, tool_call_id=run.call_id, name=run.name,
                         is_error=run.status != "ok") for run in runs]
    return replace(request, messages=messages, tool_choice=None, extra=dict(request.extra))


def _runs_of(loop: ToolLoop, calls: list[ToolCall]) -> list[ToolRun]:
    ids = {c.id for c in calls}
    return [p for p in loop.transcript if isinstance(p, ToolRun) and p.call_id in ids and p.step == len(loop.steps)]


def _with_ids(calls: list[ToolCall]) -> list[ToolCall]:
    # Some providers leave ids out; results are matched to calls by id.
    return [c if c.id else dataclasses.replace(c, id=f"call_{random.getrandbits(64):016x}") for c in calls]


# -- the loop, answered whole ---------------------------------------------------------------


async def complete(loop: ToolLoop, request: ChatRequest) -> ChatResult:
    """Model calls and tool calls until a final answer; its text is every step's text."""
    call = loop.call
    try:
        while True:
            try:
                route = await _begun(loop, call, request)
                result = await pipeline.complete(call, route, request)
            except GatewayError as error:
                await _failed(loop, call, error)
                raise
            await _ended(loop, call)
            loop.transcript.append(result.content or "")
            if not result.tool_calls:
                return replace(result, content=loop.text(), usage=replace(loop.usage))
            calls = _with_ids(result.tool_calls)
            await _stop_if_capped(loop)
            async for _ in _run_tools(loop, call, calls, parallel=request.parallel_tool_calls is not False):
                pass
            request = _next_request(request, result.content, calls, _runs_of(loop, calls))
            call = _next_call(loop)  # now: its row's latency is its own, not the tools' too
    finally:
        await _cancelled_if_open(call)


async def _cancelled_if_open(call: Call) -> None:
    """The client went away (or something broke) mid-call: its row keeps what it used."""
    if not call.recorded:
        call.mark_cancelled()
        await usage_record(call)


# -- the loop, streamed ---------------------------------------------------------------------


@dataclass(slots=True)
class _Turn:
    """What one streamed model call said: its text, and its tool calls by index."""

    text: str = ""
    calls: dict[int, ToolCall] = field(default_factory=dict)

    def add(self, event: StreamEvent) -> None:
        if event.index not in self.calls:
            self.calls[event.index] = ToolCall(event.tool_call_id or "", event.name or "", "")
        self.calls[event.index].arguments += event.arguments


async def stream(loop: ToolLoop, request: ChatRequest) -> AsyncIterator[StreamEvent | ToolProgress]:
    """The loop as one stream: every step's text as deltas, tool progress between
    steps, then the final `done` (or an `error`). Tool-call events are the
    platform's and never reach the client. A failure before anything was sent
    raises, so the face can answer with an HTTP error."""
    call = loop.call
    sent_text = False
    try:
        while True:
            route = await _begun(loop, call, request)
            turn = _Turn()
            async with aclosing(pipeline.stream(call, route, request)) as events:
                async for event in events:
                    if event.type == "delta" and event.text:
                        if sent_text and not turn.text:
                            yield StreamEvent("delta", text="\n\n")  # steps' texts, apart as in `complete`
                        turn.text += event.text
                        sent_text = True
                        yield event
                    elif event.type == "tool_call":
                        turn.add(event)
                    elif event.type in ("done", "error"):
                        final = await _turn_ended(loop, call, turn, event)
                        if final is not None:
                            yield final
                            return
            calls = _with_ids(list(turn.calls.values()))
            await _stop_if_capped(loop)
            async for progress in _run_tools(loop, call, calls, parallel=request.parallel_tool_calls is not False):
                yield progress
            request = _next_request(request, turn.text, calls, _runs_of(loop, calls))
            call = _next_call(loop)
    except GatewayError as error:
        if not call.recorded:
            await _failed(loop, call, error)
        raise
    finally:
        await _cancelled_if_open(call)


async def _turn_ended(loop: ToolLoop, call: Call, turn: _Turn, event: StreamEvent) -> StreamEvent | None:
    """Write the step's row; the event that ends the stream, or None to go on with tools."""
    if event.type == "error":  # after content: the pipeline filed it on the step's call
        await _ended(loop, call)
        if call is not loop.call:
            loop.call.status, loop.call.http_status = call.status, call.http_status
            loop.call.error_code, loop.call.error_message = call.error_code, call.error_message
        return event
    await _ended(loop, call)
    loop.transcript.append(turn.text)
    if not turn.calls:
        return event
    return None


# -- what the faces call ----------------------------------------------------------------------


async def answer(call: Call, route: Route, request: ChatRequest, loop: ToolLoop | None) -> ChatResult:
    """The request's answer: through the loop when it has one, else the one model call."""
    if loop is None:
        return await pipeline.complete(call, route, request)
    return await complete(loop, request)


async def stream_start(call: Call, route: Route, request: ChatRequest, loop: ToolLoop | None
                       ) -> tuple[AsyncIterator[StreamEvent | ToolProgress], StreamEvent | ToolProgress | None]:
    """relay.stream_start, through the loop when it has one: a failure before the first
    item reaches the client is raised here, so it is a proper HTTP error."""
    if loop is None:
        return await relay.stream_start(call, route, request)
    events = stream(loop, request)
    return events, await anext(events, None)


def loop_headers(loop: ToolLoop | None) -> dict[str, str]:
    """The run the loop's model calls and tool calls are filed under (generated when the caller gave none)."""
    return {"X-EP-Run-Id": loop.run_id} if loop is not None else {}
