"""Dashboard writes to budgets and alerts; each leaves an AuditEntry."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record, changed, snapshot
from budgets.models import Alert, Budget

BUDGET_FIELDS = ["name", "scope", "team", "api_key", "persona", "period", "limit_usd", "hard", "thresholds", "enabled"]


@transaction.atomic
def budget_save(*, actor, budget: Budget, before: dict | None) -> Budget:
    budget.save()
    after = snapshot(budget, BUDGET_FIELDS)
    verb = "Created" if before is None else "Changed " + ", ".join(changed(before, after)) + " of"
    audit_record(actor=actor, action="budget.create" if before is None else "budget.update", target=budget,
                 summary=f"{verb} budget '{budget.name}'", before=before, after=after)
    return budget


@transaction.atomic
def alert_acknowledge(*, actor, alert: Alert) -> bool:
    if alert.acknowledged_at is not None:
        return False
    alert.acknowledged_at = timezone.now()
    alert.save(update_fields=["acknowledged_at"])
    audit_record(actor=actor, action="alert.acknowledge", target=alert, label=alert.message[:200],
                 summary=f"Acknowledged: {alert.message}"[:300])
    return True
