"""Personas and their routes: an ordered fallback chain of provider + model."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from providers.models import Provider, model_name_validate

# Parameters the pipeline reads, range-checked wherever they are set (the
# editor, the persona map import, admin) so a typo cannot reach a provider as
# a 400 in production; other parameters go to the adapter as extras.
PARAM_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "max_tokens": (1, 1_000_000)}


def params_validate(value) -> None:
    """A persona's default params or a step's params: a JSON object, its known numbers in range."""
    if not isinstance(value, dict):
        raise ValidationError('Parameters must be a JSON object, e.g. {"temperature": 0.2}.', code="invalid_params")
    for name, (low, high) in PARAM_RANGES.items():
        if name in value:
            number = value[name]
            if isinstance(number, bool) or not isinstance(number, int | float) or not low <= number <= high:
                raise ValidationError(f"{name} must be a number from {low:g} to {high:g}.", code="invalid_params")


def _as_field_error(field: str, check, value) -> None:
    try:
        check(value)
    except ValidationError as error:
        raise ValidationError({field: error.messages}) from None


class Persona(models.Model):
    slug = models.SlugField(max_length=50, unique=True, help_text="What callers put in `model`, e.g. architect.")
    name = models.CharField(max_length=100, blank=True)
    description = models.TextField(blank=True)
    system_prompt = models.TextField(blank=True)
    default_params = models.JSONField(
        default=dict, blank=True, help_text="Defaults such as temperature; the caller's values win."
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Cap on max_tokens for this persona; also used when a caller sets none."
    )
    enabled = models.BooleanField(default=True)
    # The response cache (gateway/response_cache.py): off unless the operator opts in.
    cache_enabled = models.BooleanField(
        "Response cache", default=False,
        help_text="Answer a repeated identical request from the cache, at no cost, instead of calling the provider.")
    cache_ttl_seconds = models.PositiveIntegerField(
        "Cache lifetime (seconds)", default=3600, validators=[MinValueValidator(1), MaxValueValidator(30 * 86400)],
        help_text="How long a cached answer is served, 1 second to 30 days.")
    cache_any_temperature = models.BooleanField(
        "Cache answers at any temperature", default=False,
        help_text="Off: only requests with temperature 0 (the caller's, else the persona's or route's) are cached.")
    cache_shared = models.BooleanField(
        "Share the cache between teams", default=False,
        help_text="Off: a team is only ever served answers its own requests produced.")
    prompt_cache_system = models.BooleanField(
        "Provider prompt caching for the system prompt", default=False,
        help_text="Marks the system prompt as a cache breakpoint (cache_control) on Anthropic steps, so repeated "
                  "prompts are billed at the cached rate.")
    updated_at = models.DateTimeField(auto_now=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        _as_field_error("default_params", params_validate, self.default_params)


class RouteStep(models.Model):
    """One step of a persona's fallback chain, tried in `position` order."""

    persona = models.ForeignKey(Persona, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=0)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="route_steps")
    model = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True, help_text="Overrides for this step, e.g. temperature.")
    weight = models.PositiveIntegerField(default=1, help_text="Share of traffic among steps of equal position.")
    fallback_on_client_error = models.BooleanField(
        default=False, help_text="Also fall back on bad_request / context_length errors."
    )

    class Meta:
        ordering = ["persona", "position", "id"]

    def __str__(self) -> str:
        return f"{self.persona.slug}#{self.position}: {self.provider.name}/{self.model}"

    def clean(self) -> None:
        if not self.model.strip():
            raise ValidationError({"model": "Name the model this step calls."})
        _as_field_error("model", model_name_validate, self.model)
        _as_field_error("params", params_validate, self.params)
