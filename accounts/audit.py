"""The audit log's one writer: dashboard services call `audit_record` inside
their transaction, so a change and its entry are saved together or not at all."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Model

from accounts.models import AuditEntry

# Never copied into an entry, whatever a snapshot function is given.
SECRET_FIELDS = frozenset({"credential_encrypted", "key_hash", "credential", "password", "secrets_encrypted", "secrets"})


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Model):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def snapshot(obj: Model, fields: list[str]) -> dict[str, Any]:
    """A JSON-safe picture of `fields` of `obj`, secrets left out."""
    return {name: _plain(getattr(obj, name)) for name in fields if name not in SECRET_FIELDS}


def changed(before: dict | None, after: dict | None) -> list[str]:
    before, after = before or {}, after or {}
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def audit_record(
    *, actor, action: str, target: Model | None = None, target_type: str = "", label: str = "",
    summary: str = "", before: Any = None, after: Any = None,
) -> AuditEntry:
    return AuditEntry.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=getattr(actor, "username", "") or "",
        action=action,
        target_type=target_type or (target._meta.model_name if target is not None else ""),
        target_id=str(target.pk) if target is not None and target.pk is not None else "",
        target_label=(label or (str(target) if target is not None else ""))[:200],
        summary=summary[:300],
        before=before,
        after=after,
    )
