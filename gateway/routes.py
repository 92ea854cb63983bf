"""Which steps a request may take, and what each step is sent.

`caller_names_check` refuses names a caller sends that are unsafe to carry
on; `route_resolve` turns the `model` a client names (a persona slug,
`persona/<slug>`, or `provider/model` for keys with the `direct` scope) into a
Route; `request_limits_check` refuses a request over the gateway's or the
route's limits; `request_for_step` is the caller's request as one step sends it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace

from django.conf import settings

from accounts.snapshot import KeyInfo
from gateway.call import Route
from gateway.config import Snapshot
from gateway.errors import InvalidRequest, NotFound, PermissionDenied
from personas.snapshot import StepInfo
from providers.types import ChatRequest, Message, TextPart, Tool, has_cache_breakpoint

PERSONA_PREFIX = "persona/"
# Request fields a route step's params may override; other step params go to
# ChatRequest.extra for the adapter (e.g. claude_agent's allowed_tools).
OVERRIDABLE = ("temperature", "top_p", "max_tokens", "stop", "seed", "response_format", "parallel_tool_calls")


# The names a caller sends reach response headers (X-EP-Model, X-EP-Persona), log
# lines, the ledger and its CSV exports. A newline in one split a header after
# the provider had answered (a 500 for a paid call), so they are checked first:
# a model or persona is printable ASCII without spaces (as model names in the
# catalog are: providers.models.MODEL_NAME), a run id or step any text without
# control characters, each within the ledger's column.
_MODEL = re.compile(r"[!-~]{1,300}")
_LABEL = re.compile("[^\x00-\x1f\x7f-\x9f\u2028\u2029]{0,100}")
_NAME_RULES = {  # argument -> (pattern, what the caller called it, the rule in words)
    "model": (_MODEL, "model", "1 to 300 printable ASCII characters without spaces"),
    "persona_header": (_MODEL, "X-Persona", "1 to 300 printable ASCII characters without spaces"),
    "run_id": (_LABEL, "run_id", "at most 100 characters, none of them control characters"),
    "step": (_LABEL, "step", "at most 100 characters, none of them control characters"),
}


def caller_names_check(**names: str | None) -> None:
    """Raise a 400 (`invalid_<name>`) for the first name that breaks its rule."""
    for argument, value in names.items():
        pattern, label, rule = _NAME_RULES[argument]
        if value and not pattern.fullmatch(value):
            code = "invalid_persona_header" if argument == "persona_header" else f"invalid_{argument}"
            raise InvalidRequest(f"{label} must be {rule}.", code=code, param=label)


def route_resolve(*, snapshot: Snapshot, model: str, key: KeyInfo, persona_header: str | None = None) -> Route:
    name = (persona_header or model or "").strip()
    slug = name.removeprefix(PERSONA_PREFIX)
    persona = snapshot.personas.get(slug)
    if persona is not None:
        if not persona.steps:
            raise NotFound(f"Persona '{slug}' has no route: add a provider and model to it.", code="route_empty")
        caps = [c for c in (persona.max_output_tokens, key.max_output_tokens) if c]
        return Route(slug, persona, persona.steps, min(caps) if caps else None)
    if "/" in name and not name.startswith(PERSONA_PREFIX):
        return _direct_route(snapshot, name, key)
    known = ", ".join(sorted(snapshot.personas)) or "none"
    raise NotFound(
        f"Unknown persona '{slug}'. Known personas: {known}.", code="model_not_found", param="model"
    )


def _direct_route(snapshot: Snapshot, name: str, key: KeyInfo) -> Route:
    provider_name, model = name.split("/", 1)
    provider = snapshot.providers.get(provider_name)
    if provider is None or not model:
        raise NotFound(f"Unknown persona or provider/model '{name}'.", code="model_not_found", param="model")
    if not key.has_scope("direct"):
        raise PermissionDenied(
            f"This API key may call personas only, not '{name}' directly (it needs the 'direct' scope).",
            code="direct_model_not_allowed",
        )
    step = StepInfo(0, provider, model, {}, 1, False)
    return Route(name, None, (step,), key.max_output_tokens)


def request_limits_check(*, messages: int, max_tokens: int | None, route: Route, tools: Sequence[Tool] = ()) -> None:
    """Raise a 400 when the request is over a limit that needs its route.

    The body size is Django's (DATA_UPLOAD_MAX_MEMORY_SIZE = EP_MAX_BODY_BYTES,
    413 `request_too_large`). A caller asking for more output than the cap is
    refused, not clamped: a silently shortened answer (finish_reason "length")
    looks like the model's choice, while a refusal names the cap, and the
    caller can ask within it.
    """
    limit = settings.EP_MAX_MESSAGES
    if messages > limit:
        raise InvalidRequest(
            f"This request has {messages} messages; this gateway accepts at most {limit}.",
            code="too_many_messages", param="messages",
        )
    if tools:
        tools_limits_check(tools)
    cap = route.max_output_tokens
    if cap and max_tokens and max_tokens > cap:
        raise InvalidRequest(
            f"max_tokens is {max_tokens}, above the cap of {cap} output tokens for "
            f"'{route.label}' with this API key; ask for at most {cap}.",
            code="max_tokens_too_large", param="max_tokens",
        )


def tools_limits_check(tools: Sequence[Tool]) -> None:
    """Tool definitions are sent to the provider with every call (and paid for
    as input): their number, their size as JSON and how deep a schema nests
    are capped, so no request can make the gateway forward an unbounded one."""
    if len(tools) > settings.EP_MAX_TOOLS:
        raise InvalidRequest(f"This request offers {len(tools)} tools; this gateway accepts at most "
                             f"{settings.EP_MAX_TOOLS} (EP_MAX_TOOLS).", code="too_many_tools", param="tools")
    deepest = max(_depth(t.parameters) for t in tools)
    if deepest > settings.EP_MAX_TOOL_SCHEMA_DEPTH:
        raise InvalidRequest(f"A tool's parameters nest {deepest} levels deep; this gateway accepts at most "
                             f"{settings.EP_MAX_TOOL_SCHEMA_DEPTH} (EP_MAX_TOOL_SCHEMA_DEPTH).",
                             code="tool_schema_too_deep", param="tools")
    size = sum(len(json.dumps([t.name, t.description, t.parameters], ensure_ascii=False).encode()) for t in tools)
    if size > settings.EP_MAX_TOOLS_BYTES:
        raise InvalidRequest(f"The tool definitions are {size} bytes of JSON; this gateway accepts at most "
                             f"{settings.EP_MAX_TOOLS_BYTES} (EP_MAX_TOOLS_BYTES).", code="tools_too_large",
                             param="tools")


def _depth(value) -> int:
    """How deep JSON nests (a scalar is 0), without recursing: the value may be deeper than Python's stack."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            pending.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def request_for_step(base: ChatRequest, route: Route, step: StepInfo) -> ChatRequest:
    """The caller's request as this step sends it: persona prompt, defaults, overrides, caps."""
    persona = route.persona
    request = replace(base, model=step.model, messages=list(base.messages), extra=dict(base.extra))
    if persona is not None:
        if persona.system_prompt:
            request.messages.insert(0, Message(role="system", content=persona.system_prompt))
        for name, value in persona.default_params.items():
            if name in OVERRIDABLE and getattr(request, name) in (None, []):
                setattr(request, name, value)
    for name, value in step.params.items():
        if name in OVERRIDABLE:
            setattr(request, name, value)
        else:
            request.extra[name] = value
    # A caller asking above the cap was refused already (request_limits_check);
    # this clamps what the operator's defaults and step params ask for.
    cap = route.max_output_tokens
    if cap:
        request.max_tokens = min(request.max_tokens or cap, cap)
    if persona is not None and persona.prompt_cache_system and step.provider.kind in PROMPT_CACHE_KINDS:
        _system_prompt_cached(request)
    return request


# Provider kinds whose prompt caching needs breakpoints in the request
# (OpenAI and Gemini cache repeated prefixes by themselves).
PROMPT_CACHE_KINDS = ("anthropic",)
EPHEMERAL = {"type": "ephemeral"}


def _system_prompt_cached(request: ChatRequest) -> None:
    """A prompt-cache breakpoint at the end of the system prompt (its last system
    message), so the tools and the whole system prompt are read from the
    provider's cache on repeated calls. A caller who set breakpoints of its own
    keeps them alone: Anthropic allows four per request."""
    if has_cache_breakpoint(request.messages, request.tools):
        return
    for index in range(len(request.messages) - 1, -1, -1):
        message = request.messages[index]
        if message.role == "system":
            if message.text():
                request.messages[index] = replace(message, content=[TextPart(message.text(),
                                                                             cache_control=dict(EPHEMERAL))])
            return


def option(step: StepInfo, name: str, default: float) -> float:
    """A per-step knob (retries, breaker, timeouts): the route step's params,
    then the provider's options, then the setting's `default`."""
    value = step.params.get(name, step.provider.adapter_config.options.get(name))
    return float(default if value is None else value)
