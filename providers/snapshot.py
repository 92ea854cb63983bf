"""What the request path knows of providers and their models, held in memory (gateway/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from providers.adapters.base import AdapterConfig


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    input_price: Decimal | None
    output_price: Decimal | None
    cached_input_price: Decimal | None
    context_window: int | None
    max_output_tokens: int | None
    # Capabilities the model is known not to have ("tools", "images", "json_schema", ...).
    unsupported: frozenset[str] = frozenset()
    cache_write_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    id: int
    name: str
    kind: str
    enabled: bool
    adapter_config: AdapterConfig = field(repr=False)
    models: dict[str, ModelInfo] = field(default_factory=dict)


def provider_info(provider, models) -> ProviderInfo:
    """A Provider row and its Model rows as the request path holds them."""
    options = dict(provider.options or {})
    config = AdapterConfig(
        provider_id=provider.id,
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        credential=provider.get_credential(),
        connect_timeout=provider.connect_timeout,
        read_timeout=provider.read_timeout,
        options=options,
    )
    infos = {
        m.name: ModelInfo(
            m.name, m.input_price, m.output_price, m.cached_input_price, m.context_window, m.max_output_tokens,
            m.unsupported(), m.cache_write_price,
        )
        for m in models
        if m.enabled
    }
    return ProviderInfo(provider.id, provider.name, provider.kind, provider.enabled, config, infos)
