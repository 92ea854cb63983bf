"""The money side: budgets, the usage ledger (one row per request), alerts."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from accounts.models import ApiKey, Team


def default_thresholds() -> list[int]:
    return [50, 80, 100]


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
    thresholds = models.JSONField(
        default=default_thresholds, blank=True, help_text="Alert at these percentages, e.g. [50, 80, 100]."
    )
    notify_emails = models.TextField(blank=True, help_text="Comma-separated addresses alerted by email.")
    webhook_url = models.URLField(blank=True, help_text="Alerts are POSTed here, HMAC-signed.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class BudgetCounter(models.Model):
    """Spend and in-flight reservations of one budget in one period.

    `spent` always equals the sum of the ledger rows the budget covers in the
    period: it is only changed in the transaction that writes such a row.
    """

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="counters")
    period_start = models.DateTimeField()
    spent = models.DecimalField(max_digits=18, decimal_places=8, default=0)
    reserved = models.DecimalField(max_digits=18, decimal_places=8, default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["budget", "period_start"], name="one_counter_per_period")]


class Reservation(models.Model):
    """Worst-case cost held against a counter while a request runs; expires if
    its process dies before settling it."""

    request_id = models.CharField(max_length=64, db_index=True)
    counter = models.ForeignKey(BudgetCounter, on_delete=models.CASCADE, related_name="reservations")
    amount = models.DecimalField(max_digits=18, decimal_places=8)
    expires_at = models.DateTimeField(db_index=True)


class RateLimit(models.Model):
    """Requests and tokens per minute for a team or one API key."""

    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="rate_limits")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="rate_limits")
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        who = f"key {self.api_key_id}" if self.api_key_id else f"team {self.team_id}"
        return f"{who}: {self.requests_per_minute or '-'} rpm, {self.tokens_per_minute or '-'} tpm"


class WebhookDelivery(models.Model):
    """The stored queue of alert webhooks: retried until delivered, never lost."""

    alert = models.ForeignKey("Alert", on_delete=models.CASCADE, related_name="deliveries")
    url = models.URLField()
    payload = models.TextField()
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)


class Usage(models.Model):
    """The ledger: exactly one row per authenticated request, whatever its fate."""

    STATUSES = [
        ("ok", "Answered"),
        ("error", "Provider failed"),
        ("refused", "Refused by the gateway"),
        ("cancelled", "Cancelled by the client"),
    ]

    request_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # No index of its own: (team, created_at) below serves every lookup by team.
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                             db_index=False)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    persona = models.CharField(max_length=50, blank=True)
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
    # Answered from the gateway's response cache: cost_usd is 0 and saved_usd is
    # what the cached answer cost when a provider gave it.
    cache_hit = models.BooleanField(default=False)
    # What caching saved on this request: a response cache hit's avoided cost, or
    # on a provider call, its prompt-cached input tokens at the full price minus
    # what it was billed (negative when cache writes cost more than reads saved).
    saved_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # One entry per provider attempt: provider, model, outcome (ok or error kind), ms.
    attempt_log = models.JSONField(default=list, blank=True)
    trace_id = models.CharField(max_length=32, blank=True)  # OpenTelemetry, when tracing is on
    run_id = models.CharField(max_length=100, blank=True)
    step = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Every request inserts a row, so each index costs every request. Exact-match
        # lookups only: Meta indexes, not db_index=True, which on PostgreSQL adds a
        # second "_like" index per text column (docs/PERFORMANCE.md).
        indexes = [
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["request_id"], name="usage_request_id_idx"),
            models.Index(fields=["persona"], name="usage_persona_idx"),
            models.Index(fields=["trace_id"], name="usage_trace_id_idx"),
            models.Index(fields=["run_id"], name="usage_run_id_idx"),
        ]

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


class UsageDaily(models.Model):
    """The ledger's model calls (budgets.rollups.MODEL_CALL) rolled up: one row
    per UTC day, team, key, persona, provider and model (budgets/rollups.py).
    Other rows cost nothing by that definition, so every cost adds up here.

    Written once per closed day by the sweeper, never by the request path; the
    day's RolledDay row says it is here. Team and key are plain ids, not foreign
    keys: deleting a team or key leaves the ledger's rows with no team (SET_NULL),
    and an id no team has any more reads as "(none)" here just as there.
    """

    day = models.DateField()
    team_id = models.IntegerField(null=True)
    api_key_id = models.IntegerField(null=True)
    persona = models.CharField(max_length=50, blank=True)
    provider = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=200, blank=True)
    requests = models.BigIntegerField()
    errors = models.BigIntegerField()  # status "error": the provider failed
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8)
    saved_usd = models.DecimalField(max_digits=20, decimal_places=8)  # response cache and prompt caching
    cache_hits = models.BigIntegerField()  # answered from the response cache
    cache_saved_usd = models.DecimalField(max_digits=20, decimal_places=8)  # of saved_usd, by those
    prompt_cached_tokens = models.BigIntegerField()  # cached input tokens of provider calls (not cache hits)

    class Meta:
        indexes = [models.Index(fields=["day", "team_id"], name="usage_daily_day_team_idx")]


class UsageRunDaily(models.Model):
    """Model calls per UTC day, team and workflow run (run "" for none): the
    costs page's breakdown by run, which UsageDaily would multiply by every run."""

    day = models.DateField()
    team_id = models.IntegerField(null=True)
    run_id = models.CharField(max_length=100, blank=True)
    requests = models.BigIntegerField()
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8)

    class Meta:
        indexes = [models.Index(fields=["day", "team_id"], name="usage_run_daily_day_team_idx"),
                   models.Index(fields=["run_id", "day"], name="usage_run_daily_run_day_idx")]


class UsageRun(models.Model):
    """Each workflow run's model calls over every rolled day (UsageRunDaily
    summed per run id): the costliest runs of a long range are found by walking
    these by cost, not by summing every run of the range (rollups.top_runs).
    `team_id` is the run's team, or None when several teams used its id.
    Rewritten from UsageRunDaily for the runs of each day rolled up."""

    run_id = models.CharField(max_length=100, unique=True)
    team_id = models.IntegerField(null=True)
    first_day = models.DateField()
    last_day = models.DateField()
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8)

    class Meta:
        indexes = [models.Index(fields=["-cost_usd", "run_id"], name="usage_run_cost_idx"),
                   models.Index(fields=["last_day"], name="usage_run_last_day_idx")]


class RolledDay(models.Model):
    """A UTC day whose ledger rows are in UsageDaily and UsageRunDaily. Readers
    take such a day from the rollups and every other moment from the ledger.
    `rows` is how many ledger rows the day had when rolled up and `last_id` the
    ledger's newest id then: a late row (a spooled settlement replayed) shows in
    either, and the day is rolled up again (rollups.days_with_late_rows).
    `pruned`: its raw rows were deleted by the retention (EP_USAGE_RETENTION_DAYS)."""

    day = models.DateField(unique=True)
    rows = models.BigIntegerField()
    last_id = models.BigIntegerField(default=0)  # the ledger's newest id when rolled up: later ids are late rows
    rolled_at = models.DateTimeField(default=timezone.now)
    pruned = models.BooleanField(default=False)
