"""Alert delivery: dashboard (channel layer), email, and HMAC-signed webhooks.

Webhooks go through a stored queue (WebhookDelivery): the first attempt is
made right after the alert, failures are retried with exponential backoff by
`webhooks_deliver_due` (run by every gateway process in the background, and
by `manage.py deliver_webhooks` from cron), so a receiver that is down at
first gets the alert later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import timedelta

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from budgets.ledger import Crossing
from budgets.models import Alert, Budget, WebhookDelivery

log = logging.getLogger("budgets.alerts")
MAX_BACKOFF_SECONDS = 3600


def alert_payload(alert: Alert) -> dict:
    return {
        "type": "budget.alert",
        "alert_id": alert.id,
        "budget": alert.budget.name,
        "budget_id": alert.budget_id,
        "threshold": alert.threshold,
        "period_start": alert.period_start.isoformat(),
        "message": alert.message,
        "created_at": alert.created_at.isoformat(),
    }


def signature(body: bytes) -> str:
    secret = (settings.EP_WEBHOOK_SECRET or settings.SECRET_KEY).encode()
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def alerts_dispatch(crossings: list[Crossing]) -> list[dict]:
    """Email and queue webhooks for newly created alerts; returns their payloads
    for the live feed. Runs after the ledger transaction committed."""
    payloads = []
    for crossing in crossings:
        alert = Alert.objects.select_related("budget").filter(
            budget_id=crossing.budget.id, threshold=crossing.threshold, period_start=crossing.period_start
        ).first()
        if alert is None:
            continue
        payload = alert_payload(alert)
        payloads.append(payload)
        _email(alert.budget, alert.message)
        if alert.budget.webhook_url:
            WebhookDelivery.objects.create(alert=alert, url=alert.budget.webhook_url, payload=json.dumps(payload))
    return payloads


def _email(budget: Budget, message: str) -> None:
    recipients = [a.strip() for a in budget.notify_emails.split(",") if a.strip()]
    if not recipients:
        return
    try:
        send_mail(f"[Execution Platform] {message[:120]}", message, None, recipients)
    except Exception:  # a mail server outage must not fail the request that crossed
        log.warning("could not email alert for budget %s", budget.id, exc_info=True)


def _attempt(delivery: WebhookDelivery) -> None:
    body = delivery.payload.encode()
    try:
        response = httpx.post(
            delivery.url, content=body, timeout=5, follow_redirects=False,
            headers={"Content-Type": "application/json", "X-EP-Signature": signature(body),
                     "X-EP-Delivery": str(delivery.id)},
        )
        ok, error = response.status_code < 300, f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        ok, error = False, type(exc).__name__
    delivery.attempts += 1
    if ok:
        delivery.delivered_at = timezone.now()
    else:
        delivery.last_error = error[:300]
        backoff = min(MAX_BACKOFF_SECONDS, settings.EP_WEBHOOK_RETRY_SECONDS * 2 ** (delivery.attempts - 1))
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=backoff)
    delivery.save(update_fields=["attempts", "delivered_at", "last_error", "next_attempt_at"])


def webhooks_deliver_due(limit: int = 50) -> int:
    """Try every undelivered webhook whose time has come; returns how many succeeded."""
    with transaction.atomic():
        # skip_locked: two processes sweeping at once never post one alert twice
        due = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(delivered_at__isnull=True, next_attempt_at__lte=timezone.now())
            .order_by("next_attempt_at")[:limit]
        )
        for delivery in due:
            _attempt(delivery)
    return sum(1 for d in due if d.delivered_at)
