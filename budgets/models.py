"""The money side: budgets, the usage ledger (one row per request), alerts."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from gateway.models import ApiKey, Team


class Budget(models.Model):
    SCOPES = [("global", "Everything"), ("team", "A team"), ("key", "An API key"), ("persona", "A persona")]
    PERIODS = [("day", "Per day"), ("week", "Per week"), ("month", "Per month"), ("lifetime", "Lifetime")]

    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=SCOPES, default="global")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    persona = models.ForeignKey(
        "personas.Persona", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    period = models.CharField(max_length=10, choices=PERIODS, default="month")
    limit_usd = models.DecimalField(max_digits=14, decimal_places=6)
    hard = models.BooleanField(default=True, help_text="Refuse requests over the limit; otherwise only alert.")
    thresholds = models.JSONField(default=list, blank=True, help_text="Alert at these percentages, e.g. [50, 80, 100].")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Usage(models.Model):
    """The ledger: exactly one row per authenticated request, whatever its fate."""

    STATUSES = [
        ("ok", "Answered"),
        ("error", "Provider failed"),
        ("refused", "Refused by the gateway"),
        ("cancelled", "Cancelled by the client"),
    ]

    request_id = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    persona = models.CharField(max_length=50, blank=True, db_index=True)
    provider = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=200, blank=True)
    endpoint = models.CharField(max_length=40, blank=True)
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=STATUSES, default="ok")
    http_status = models.PositiveSmallIntegerField(default=200)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    run_id = models.CharField(max_length=100, blank=True, db_index=True)
    step = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "created_at"])]

    def __str__(self) -> str:
        return f"{self.request_id} {self.status}"


class Alert(models.Model):
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    threshold = models.PositiveSmallIntegerField()
    period_start = models.DateTimeField()
    message = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # An alert fires once per budget, threshold and period, however many
            # requests cross it at the same moment.
            models.UniqueConstraint(fields=["budget", "threshold", "period_start"], name="one_alert_per_period")
        ]

    def __str__(self) -> str:
        return self.message
