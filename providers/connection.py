"""Test connection: one tiny request through a provider's own adapter."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async

from providers.adapters import adapter_class
from providers.models import Provider
from providers.services import DEFAULT_MODELS
from providers.snapshot import provider_info as _provider_info
from providers.types import ChatRequest, Message, ProviderError


@dataclass
class ConnectionResult:
    ok: bool
    model: str
    latency_ms: int
    error_kind: str = ""
    message: str = ""
    host: str = ""

    @property
    def sentence(self) -> str:
        if self.ok:
            return f"Connected: {self.model} answered in {self.latency_ms} ms."
        # The message is the adapter's, which names the socket's own reason for a
        # failed connection (DNS, refused, TLS: providers.adapters.base.connection_failure).
        return f"Failed ({self.error_kind}) calling {self.model} at {self.host}: {self.message}"


def _config_and_model(provider_id: int):
    provider = Provider.objects.prefetch_related("models").get(pk=provider_id)
    models = [m for m in provider.models.all() if m.enabled]
    model = models[0].name if models else DEFAULT_MODELS.get(provider.kind, provider.kind)
    return _provider_info(provider, provider.models.all()).adapter_config, model


async def connection_test(provider_id: int) -> ConnectionResult:
    """A fresh adapter (not the shared one: this checks the saved config as it
    is now, and never leaves a client bound to a test), closed afterwards."""
    config, model = await sync_to_async(_config_and_model)(provider_id)
    adapter = adapter_class(config.kind)(config)
    started = time.perf_counter()
    try:
        await adapter.chat(ChatRequest(model=model, messages=[Message("user", "Reply with OK.")], max_tokens=5))
    except ProviderError as error:
        host = urlsplit(config.base_url).hostname or "the provider's public API"
        return ConnectionResult(False, model, _ms(started), error.kind, error.message[:200], host)
    finally:
        await adapter.aclose()
    return ConnectionResult(True, model, _ms(started))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
