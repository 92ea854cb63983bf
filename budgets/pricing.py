"""What a call costs, in USD as Decimal.

Prices come from the Model row when it sets them (per million tokens), else
from the `genai-prices` package's bundled snapshot (never fetched at run
time). Cached input tokens are billed at the cached price; reasoning tokens
are output tokens and are already inside `output_tokens`.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

import genai_prices

from providers.snapshot import ModelInfo
from providers.types import Usage

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)

# Our provider kinds -> genai-prices provider ids.
GENAI_PRICES_PROVIDER = {"openai": "openai", "anthropic": "anthropic", "gemini": "google", "claude_agent": "anthropic",
                         "azure_openai": "azure", "bedrock": "aws", "vertex_gemini": "google",
                         "vertex_anthropic": "anthropic"}


@lru_cache(maxsize=1024)
def _bundled_model_price(kind: str, model: str):
    provider_id = GENAI_PRICES_PROVIDER.get(kind)
    if provider_id is None:
        return None
    try:
        probe = genai_prices.calc_price(genai_prices.Usage(input_tokens=0), model_ref=model, provider_id=provider_id)
    except LookupError:
        return None
    return probe.model_price


def _bundled_cost(kind: str, model: str, usage: Usage) -> Decimal | None:
    if _bundled_model_price(kind, model) is None:
        return None
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cached_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
        ),
        model_ref=model,
        provider_id=GENAI_PRICES_PROVIDER[kind],
    )
    return Decimal(calc.total_price)


# Cache writes where the model row sets no price for them: Anthropic's 5-minute
# entries cost 1.25x the input price (the default TTL; a 1-hour entry costs 2x:
# set the model's cache-write price for that). Others bill writes as plain input.
CACHE_WRITE_MULTIPLIER = {"anthropic": Decimal("1.25"), "claude_agent": Decimal("1.25"),
                          "vertex_anthropic": Decimal("1.25"), "bedrock": Decimal("1.25")}


def _table_cost(info: ModelInfo, usage: Usage, kind: str = "") -> Decimal:
    cached_price = info.cached_input_price if info.cached_input_price is not None else info.input_price
    write_price = info.cache_write_price
    if write_price is None:
        write_price = (info.input_price or ZERO) * CACHE_WRITE_MULTIPLIER.get(kind, Decimal(1))
    uncached = max(0, usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens)
    return (
        uncached * (info.input_price or ZERO)
        + usage.cached_tokens * (cached_price or ZERO)
        + usage.cache_write_tokens * write_price
        + usage.output_tokens * (info.output_price or ZERO)
    ) / MILLION


def has_table_prices(info: ModelInfo | None) -> bool:
    return info is not None and info.input_price is not None and info.output_price is not None


def cost_of(*, kind: str, model: str, info: ModelInfo | None, usage: Usage) -> Decimal:
    """The cost of one call; a provider's own report (claude_agent) wins."""
    if usage.reported_cost_usd is not None:
        return Decimal(str(usage.reported_cost_usd))
    if has_table_prices(info):
        return _table_cost(info, usage, kind)
    bundled = _bundled_cost(kind, model, usage)
    return bundled if bundled is not None else ZERO


def worst_case_cost(*, kind: str, model: str, info: ModelInfo | None, input_tokens: int, max_output: int,
                    cache_writes: bool = False) -> Decimal:
    """The most a call can cost: every input token uncached, every output token used;
    with `cache_writes` (the request marks prompt-cache breakpoints) every input
    token may be written to the provider's cache, which costs more than plain input."""
    usage = Usage(input_tokens=input_tokens, output_tokens=max_output,
                  cache_write_tokens=input_tokens if cache_writes else 0)
    return cost_of(kind=kind, model=model, info=info, usage=usage)


def prompt_cache_savings(*, kind: str, model: str, info: ModelInfo | None, usage: Usage, cost: Decimal) -> Decimal:
    """What provider prompt caching saved on a call that cost `cost`: the same
    tokens with none read from or written to the cache, minus `cost`. Negative
    when cache writes (priced above plain input) outweigh the reads."""
    uncached = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                     reasoning_tokens=usage.reasoning_tokens)
    return cost_of(kind=kind, model=model, info=info, usage=uncached) - cost
