"""Adapter registry: one module per provider kind, imported lazily.

Like healthchecks' TRANSPORTS: a plain dict of dotted paths, so importing the
registry never imports an SDK that a deployment does not use.
"""

from __future__ import annotations

import asyncio
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
}

KIND_LABELS: dict[str, str] = {
    "demo": "Demo (offline, simulated)",
    "openai": "OpenAI or OpenAI-compatible",
    "anthropic": "Anthropic",
    "gemini": "Google Gemini",
    "claude_agent": "Claude Agent SDK (Claude CLI)",
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
    return adapter


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
