"""Adapter registry: one module per provider kind, imported lazily.

Like healthchecks' TRANSPORTS: a plain dict of dotted paths, so importing the
registry never imports an SDK that a deployment does not use.
"""

from __future__ import annotations

import asyncio
import atexit
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.adapters.base import Adapter, AdapterConfig

ADAPTERS: dict[str, str] = {
    "demo": "providers.adapters.demo.DemoAdapter",
    "openai": "providers.adapters.openai.OpenAIAdapter",
    "anthropic": "providers.adapters.anthropic.AnthropicAdapter",
    "gemini": "providers.adapters.gemini.GeminiAdapter",
    "claude_agent": "providers.adapters.claude_agent.ClaudeAgentAdapter",
    "azure_openai": "providers.adapters.azure_openai.AzureOpenAIAdapter",
    "bedrock": "providers.adapters.bedrock.BedrockAdapter",
    "vertex_gemini": "providers.adapters.vertex_gemini.VertexGeminiAdapter",
    "vertex_anthropic": "providers.adapters.vertex_anthropic.VertexAnthropicAdapter",
}

KIND_LABELS: dict[str, str] = {
    "demo": "Demo (offline, simulated)",
    "openai": "OpenAI or OpenAI-compatible",
    "anthropic": "Anthropic",
    "gemini": "Google Gemini",
    "claude_agent": "Claude Agent SDK (Claude CLI)",
    "azure_openai": "Azure OpenAI",
    "bedrock": "AWS Bedrock",
    "vertex_gemini": "Google Vertex AI: Gemini",
    "vertex_anthropic": "Google Vertex AI: Claude",
}


def adapter_class(kind: str) -> type[Adapter]:
    try:
        dotted = ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown provider kind {kind!r}") from None
    module_name, class_name = dotted.rsplit(".", 1)
    return getattr(import_module(module_name), class_name)


# One adapter (and so one SDK client with its connection pool) per provider
# configuration. The key includes everything that changes the client, so an
# edited credential or base URL gets a fresh client and the old one is dropped.
_instances: dict[tuple, Adapter] = {}


def get_adapter(config: AdapterConfig) -> Adapter:
    key = config.cache_key()
    adapter = _instances.get(key)
    if adapter is None:
        stale = [k for k in _instances if k[0] == config.provider_id]
        for k in stale:
            _close_later(_instances.pop(k))
        adapter = adapter_class(config.kind)(config)
        _instances[key] = adapter
        _close_at_exit_on_this_loop()
    return adapter


_exit_loop: list[asyncio.AbstractEventLoop] = []  # the loop the adapters' clients belong to


def _close_at_exit_on_this_loop() -> None:
    if _exit_loop:
        return
    try:
        _exit_loop.append(asyncio.get_running_loop())
    except RuntimeError:
        return  # made outside a loop (a management command): nothing async to close
    atexit.register(_close_all_at_exit)


async def adapters_close() -> None:
    """Close every adapter's SDK client. Daphne (make run) stopped with them open
    made aiohttp log "Unclosed client session" and "Unclosed connector" as the
    interpreter tore them down; the exit hook below calls this."""
    adapters = list(_instances.values())
    _instances.clear()
    await asyncio.gather(*(a.aclose() for a in adapters), return_exceptions=True)


def _close_all_at_exit() -> None:
    """Daphne stops its loop without closing it, so at exit it can still run the closes."""
    loop = _exit_loop[0]
    if _instances and not loop.is_closed() and not loop.is_running():
        loop.run_until_complete(adapters_close())


def _close_later(adapter: Adapter) -> None:
    """Release a replaced adapter's connections without blocking the caller."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop: nothing async is open; the pool goes with the object
    task = loop.create_task(adapter.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task] = set()
