"""Which steps a request may take, and what each step is sent.

`route_resolve` turns the `model` a client names (a persona slug,
`persona/<slug>`, or `provider/model` for keys with the `direct` scope) into a
Route; `request_limits_check` refuses a request over the gateway's or the
route's limits; `request_for_step` is the caller's request as one step sends it.
"""

from __future__ import annotations

from dataclasses import replace

from django.conf import settings

from accounts.snapshot import KeyInfo
from gateway.call import Route
from gateway.config import Snapshot
from gateway.errors import InvalidRequest, NotFound, PermissionDenied
from personas.snapshot import StepInfo
from providers.types import ChatRequest, Message

PERSONA_PREFIX = "persona/"
# Request fields a route step's params may override; other step params go to
# ChatRequest.extra for the adapter (e.g. claude_agent's allowed_tools).
OVERRIDABLE = ("temperature", "top_p", "max_tokens", "stop", "seed", "response_format", "parallel_tool_calls")


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


def request_limits_check(*, messages: int, max_tokens: int | None, route: Route) -> None:
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
    cap = route.max_output_tokens
    if cap and max_tokens and max_tokens > cap:
        raise InvalidRequest(
            f"max_tokens is {max_tokens}, above the cap of {cap} output tokens for "
            f"'{route.label}' with this API key; ask for at most {cap}.",
            code="max_tokens_too_large", param="max_tokens",
        )


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
    return request


def option(step: StepInfo, name: str, default: float) -> float:
    """A per-step knob (retries, breaker, timeouts): the route step's params,
    then the provider's options, then the setting's `default`."""
    value = step.params.get(name, step.provider.adapter_config.options.get(name))
    return float(default if value is None else value)
