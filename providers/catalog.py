"""The model catalog: which models a provider has, with prices, limits and capabilities.

A refresh asks the provider's list-models endpoint (through its adapter's SDK)
which models exist, and fills what that endpoint does not say (prices, context
window) from the bundled genai-prices data; a kind without a list endpoint
(the Claude Agent CLI), or a provider whose list fails, takes the genai-prices
models of its vendor. A refresh adds models and fills empty fields; it never
overwrites what is set (an operator's price override, a custom model's limits),
so running it again is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from genai_prices import data_snapshot
from genai_prices import types as prices

from accounts.audit import audit_record
from providers.adapters import adapter_class
from providers.models import Model, Provider
from providers.snapshot import provider_info
from providers.types import ModelListing, ProviderError

# Our provider kinds -> the genai-prices provider whose models and prices they serve.
GENAI_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "claude_agent": "anthropic", "gemini": "google",
                   "azure_openai": "azure", "bedrock": "aws", "vertex_gemini": "google", "vertex_anthropic": "anthropic"}


@dataclass
class Refresh:
    """What one refresh did, for the operator's message and the audit log."""

    source: str  # "provider" (its list-models endpoint) or "genai-prices"
    added: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    list_error: str = ""  # why the provider's list could not be used, if it could not

    def summary(self) -> str:
        said = f"{len(self.added)} added, {len(self.filled)} completed, from {self.source}"
        return said + (f" (the provider's list failed: {self.list_error})" if self.list_error else "")


def known_models(kind: str) -> dict[str, prices.ModelInfo]:
    """genai-prices' models of this kind's vendor, by id."""
    vendor = next((p for p in data_snapshot.get_snapshot().providers if p.id == GENAI_PROVIDERS.get(kind)), None)
    return {m.id: m for m in vendor.models} if vendor is not None else {}


def _match(known: dict[str, prices.ModelInfo], name: str) -> prices.ModelInfo | None:
    return known.get(name) or next((m for m in known.values() if m.is_match(name)), None)


def _flat(value) -> Decimal | None:
    """A price per million tokens; tiered prices (by prompt length) give their base tier."""
    return getattr(value, "base", value)


def _fields(listing: ModelListing, info: prices.ModelInfo | None) -> dict:
    """A catalog entry's fields: what the provider said first, then genai-prices."""
    price = info.prices if info is not None and isinstance(info.prices, prices.ModelPrice) else None
    return {
        "input_price": _flat(price.input_mtok) if price else None,
        "output_price": _flat(price.output_mtok) if price else None,
        "cached_input_price": _flat(price.cache_read_mtok) if price else None,
        "cache_write_price": _flat(price.cache_write_mtok) if price else None,
        "context_window": listing.context_window or (info.context_window if info else None),
        "max_output_tokens": listing.max_output_tokens,
        "supports_embeddings": listing.embeddings,
    }


async def listings(provider: Provider) -> tuple[list[ModelListing] | None, str]:
    """(the provider's own model list, or None, and why not when it failed).

    A client of its own, closed after: a refresh is rare, and may run in an event
    loop of its own (the management command) where the shared clients are not."""
    config = provider_info(provider, []).adapter_config
    adapter = adapter_class(config.kind)(config)
    try:
        return await adapter.list_models(), ""
    except ProviderError as error:
        return None, error.message
    finally:
        await adapter.aclose()


def entries(kind: str, listed: list[ModelListing] | None) -> tuple[str, dict[str, dict]]:
    """(source, name -> fields) for a refresh."""
    known = known_models(kind)
    if listed is not None:
        return "provider", {m.name: _fields(m, _match(known, m.name)) for m in listed if m.name}
    return "genai-prices", {m.id: _fields(ModelListing(m.id), m) for m in known.values() if not m.deprecated}


@transaction.atomic
def catalog_save(*, actor, provider: Provider, source: str, found: dict[str, dict], list_error: str = "") -> Refresh:
    refresh = Refresh(source, list_error=list_error)
    existing = {m.name: m for m in Model.objects.select_for_update().filter(provider=provider)}
    for name, values in sorted(found.items()):
        model = existing.get(name)
        if model is None:
            Model.objects.create(provider=provider, name=name, source=source,
                                 **{k: v for k, v in values.items() if v is not None})
            refresh.added.append(name)
            continue
        empty = {k: v for k, v in values.items() if v is not None and getattr(model, k) is None}
        if empty:
            for attribute, value in empty.items():
                setattr(model, attribute, value)
            model.save(update_fields=list(empty))
            refresh.filled.append(name)
    audit_record(actor=actor, action="provider.catalog_refresh", target=provider,
                 summary=f"Refreshed the model catalog of {provider.name}: {refresh.summary()}",
                 after={"added": refresh.added, "completed": refresh.filled})
    return refresh


def price_of(value: Decimal | None) -> str:
    return "list price" if value is None else f"${value:.4f}"
