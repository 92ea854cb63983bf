"""Dashboard writes to providers and models; each leaves an AuditEntry.

Audit entries record *that* a credential changed, never the credential.
"""

from __future__ import annotations

from django.db import transaction

from accounts.audit import audit_record, changed, snapshot
from providers.models import Model, Provider

PROVIDER_FIELDS = ["name", "kind", "base_url", "enabled", "connect_timeout", "read_timeout", "options"]
MODEL_FIELDS = ["name", "input_price", "output_price", "cached_input_price", "context_window",
                "max_output_tokens", "enabled"]


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
