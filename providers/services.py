"""Writes to providers: creation from the environment, credential rotation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from accounts.audit import audit_record, changed, snapshot
from providers import crypto
from providers.models import Model, Provider

ENV_KINDS = ("openai", "anthropic", "gemini")
DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-6",
    "gemini": "gemini-2.5-flash",
    "claude_agent": "claude-sonnet-4-6",
    "demo": "demo",
    # Cloud kinds: a guess for the connection test until the operator adds a model
    # (an Azure deployment is named by its owner; Bedrock wants its model id).
    "azure_openai": "gpt-4o-mini",
    "bedrock": "amazon.nova-micro-v1:0",
    "vertex_gemini": "gemini-2.5-flash",
    "vertex_anthropic": "claude-sonnet-4-6",
}
# The demo bills simulated prices so dashboards and budgets show something real.
DEMO_PRICES = {"input_price": Decimal("1.00"), "output_price": Decimal("2.00")}


@dataclass
class EnvResult:
    created: list[str]
    updated: list[str]


def demo_provider_ensure() -> Provider:
    provider, _ = Provider.objects.get_or_create(name="demo", defaults={"kind": "demo", "read_timeout": 30})
    Model.objects.get_or_create(
        provider=provider, name="demo", defaults={**DEMO_PRICES, "context_window": 128_000, "max_output_tokens": 4096}
    )
    return provider


def _env_provider_fields(kind: str, environ) -> dict | None:
    prefix = f"EP_{kind.upper()}_"
    if kind == "claude_agent":
        if environ.get("EP_CLAUDE_AGENT_ENABLED", "") not in ("1", "true", "yes"):
            return None
        cli_path = environ.get("EP_CLAUDE_AGENT_CLI_PATH", "")
        return {"base_url": environ.get(prefix + "BASE_URL", ""), "credential": "",
                "options": {"cli_path": cli_path} if cli_path else {}}
    key, base_url = environ.get(prefix + "API_KEY", ""), environ.get(prefix + "BASE_URL", "")
    if not key and not base_url:
        return None
    return {"base_url": base_url, "credential": key, "options": None}


@transaction.atomic
def providers_from_env(environ=None) -> EnvResult:
    """Create or update one provider per kind found in the environment."""
    environ = os.environ if environ is None else environ
    result = EnvResult([], [])
    for kind in (*ENV_KINDS, "claude_agent"):
        fields = _env_provider_fields(kind, environ)
        if fields is None:
            continue
        provider = Provider.objects.filter(name=kind).first()
        if provider is None:
            provider = Provider(name=kind, kind=kind)
            result.created.append(kind)
        elif _differs(provider, fields):
            result.updated.append(kind)
        else:
            continue
        provider.base_url = fields["base_url"]
        if fields["options"] is not None:
            provider.options = fields["options"]
        provider.set_credential(fields["credential"])
        provider.enabled = True
        provider.save()
        Model.objects.get_or_create(provider=provider, name=DEFAULT_MODELS[kind])
    return result


def _differs(provider: Provider, fields: dict) -> bool:
    return (
        provider.base_url != fields["base_url"]
        or provider.get_credential() != fields["credential"]
        or (fields["options"] is not None and provider.options != fields["options"])
        or not provider.enabled
    )


def credentials_rotate() -> int:
    """Re-encrypt every stored credential under the first EP_ENCRYPTION_KEYS key."""
    count = 0
    for provider in Provider.objects.exclude(credential_encrypted=""):
        provider.credential_encrypted = crypto.rotate(provider.credential_encrypted)
        provider.save(update_fields=["credential_encrypted", "updated_at"])
        count += 1
    for model, field in crypto.ROTATED_ELSEWHERE:
        for row in model.objects.exclude(**{field: ""}).only("pk", field):
            model.objects.filter(pk=row.pk).update(**{field: crypto.rotate(getattr(row, field))})
            count += 1
    return count


# -- dashboard edits, each with its audit entry -------------------------------------


PROVIDER_FIELDS = ["name", "kind", "base_url", "enabled", "connect_timeout", "read_timeout", "options"]
MODEL_FIELDS = ["name", "input_price", "output_price", "cached_input_price", "cache_write_price", "context_window",
                "max_output_tokens", "supports_tools", "supports_images", "supports_json_schema", "supports_reasoning",
                "supports_embeddings", "source", "enabled"]


@transaction.atomic
def provider_save(*, actor, provider: Provider, before: dict | None, credential: str = "",
                  clear_credential: bool = False) -> Provider:
    had_credential = provider.has_credential
    if credential:
        provider.set_credential(credential)
    elif clear_credential:
        provider.credential_encrypted = ""
    provider.save()
    after = snapshot(provider, PROVIDER_FIELDS)
    # Only whether a key is set, so the entry shows "credential: set -> replaced".
    after["credential"] = "replaced" if credential else ("removed" if clear_credential else
                                                          ("set" if provider.has_credential else "not set"))
    if before is not None:
        before["credential"] = "set" if had_credential else "not set"
    fields = changed(before, after) if before is not None else []
    summary = (f"Created provider '{provider.name}'" if before is None
               else f"Changed {', '.join(fields) or 'nothing'} of provider '{provider.name}'")
    audit_record(actor=actor, action="provider.create" if before is None else "provider.update", target=provider,
                 summary=summary, before=before, after=after)
    return provider


@transaction.atomic
def model_save(*, actor, model: Model, before: dict | None) -> Model:
    model.save()
    after = snapshot(model, MODEL_FIELDS)
    verb = "Added" if before is None else "Changed " + ", ".join(changed(before, after)) + " of"
    audit_record(actor=actor, action="model.create" if before is None else "model.update", target=model,
                 summary=f"{verb} model {model}", before=before, after=after)
    return model


@transaction.atomic
def model_delete(*, actor, model: Model) -> None:
    before = snapshot(model, MODEL_FIELDS)
    label = str(model)
    model.delete()
    audit_record(actor=actor, action="model.delete", target_type="model", label=label,
                 summary=f"Removed model {label}", before=before)
