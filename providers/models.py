"""Providers (one per configured endpoint) and their models with prices."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from providers import crypto
from providers.adapters import KIND_LABELS
from providers.validation import base_url_validate

# A model name reaches response headers (X-EP-Model), log lines and CSV exports,
# so it is printable ASCII without spaces, which every provider's model ids are.
MODEL_NAME = re.compile(r"[!-~]{1,200}")


def model_name_validate(name: str) -> None:
    """Routes and the catalog store only names that are safe in a header."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise ValidationError("A model name is 1 to 200 printable characters without spaces or control "
                              "characters, e.g. gpt-4o.", code="invalid_model_name")


class Provider(models.Model):
    name = models.SlugField(max_length=50, unique=True, help_text="How routes name it, e.g. openai.")
    kind = models.CharField(max_length=20, choices=sorted(KIND_LABELS.items()))
    base_url = models.URLField(blank=True, help_text="Empty means the provider's public API.")
    credential_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    connect_timeout = models.FloatField(default=5.0, help_text="Seconds to open a connection.")
    read_timeout = models.FloatField(default=60.0, help_text="Seconds to wait for any reply bytes.")
    options = models.JSONField(default=dict, blank=True, help_text="Adapter options, e.g. cli_path.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            base_url_validate(self.base_url)
        except ValidationError as error:
            raise ValidationError({"base_url": error.messages}) from None

    @property
    def is_demo(self) -> bool:
        return self.kind == "demo"

    def set_credential(self, plaintext: str) -> None:
        self.credential_encrypted = crypto.encrypt(plaintext)

    def get_credential(self) -> str:
        return crypto.decrypt(self.credential_encrypted)

    @property
    def has_credential(self) -> bool:
        return bool(self.credential_encrypted)


def _plain(amount) -> str:
    """A price without trailing zeros ("0.15", not "0.150000")."""
    return format(amount.normalize(), "f")


MODEL_SOURCES = [("provider", "the provider's model list"), ("genai-prices", "genai-prices data"),
                 ("custom", "added by an operator")]


class Model(models.Model):
    """A model of a provider. Prices in USD per million tokens.

    Empty prices mean "use the bundled genai-prices data for this model".
    """

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200)
    input_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    output_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cached_input_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    # Input written to the provider's prompt cache (Anthropic charges 1.25x the input
    # price for 5-minute entries, 2x for 1-hour ones); empty: budgets/pricing.py decides.
    cache_write_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    # What the model can serve; empty (None) means unknown: the provider kind's
    # capabilities decide. A step whose model says no is skipped for a request
    # that needs it (gateway/pipeline.py, capability-aware routing).
    supports_tools = models.BooleanField(null=True, blank=True)
    supports_images = models.BooleanField(null=True, blank=True)
    supports_json_schema = models.BooleanField(null=True, blank=True)
    supports_reasoning = models.BooleanField(null=True, blank=True)
    supports_embeddings = models.BooleanField(null=True, blank=True)
    source = models.CharField(max_length=20, choices=MODEL_SOURCES, default="custom",
                              help_text="Where the entry came from: the provider's model list, the bundled "
                                        "genai-prices data, or an operator.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    # Capability name (as providers.types.Capabilities and the pipeline name it) -> field.
    CAPABILITY_FIELDS = {"tools": "supports_tools", "images": "supports_images", "json_schema": "supports_json_schema",
                         "reasoning": "supports_reasoning", "embeddings": "supports_embeddings"}

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "name"], name="unique_model_per_provider")]
        ordering = ["provider__name", "name"]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.name}"

    def unsupported(self) -> frozenset[str]:
        """The capabilities this model is known not to have."""
        return frozenset(name for name, attr in self.CAPABILITY_FIELDS.items() if getattr(self, attr) is False)

    def price_label(self) -> str:
        """"$0.15 in / $0.6 out per M", or "list price" when the bundled price list decides."""
        if self.input_price is None or self.output_price is None:
            return "list price"
        return f"${_plain(self.input_price)} in / ${_plain(self.output_price)} out per M"

    def lacks(self) -> list[str]:
        """The capabilities this model is known not to have, sorted, for pages."""
        return sorted(self.unsupported())

    def clean(self) -> None:
        try:
            model_name_validate(self.name)
        except ValidationError as error:
            raise ValidationError({"name": error.messages}) from None


class ConfigGeneration(models.Model):
    """One row whose value changes whenever routing configuration changes
    (keys, personas, routes, providers, models, budgets, limits).

    Gateway processes without Redis poll it to drop their in-memory config
    (gateway/config.py); with Redis a counter there plays the same role.
    """

    value = models.BigIntegerField(default=0)
