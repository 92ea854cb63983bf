"""Who calls the gateway: teams, their API keys, dashboard memberships, the audit log.

The tables keep the names they had when these models lived in the `gateway`
app (`gateway_team`, ...), so existing databases move without copying a row.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "ep-"
SCOPES = ("chat", "direct", "admin")


def hash_key(raw_key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough: there is
    # nothing to brute-force. Only this hash is ever stored.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "gateway_team"

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """An API key, stored hashed; the key itself is shown once, at creation.

    Scopes: `chat` calls personas; `direct` may also name a provider/model
    directly; `admin` may use the management API across teams.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Cap on max_tokens for this key's requests; a request asking for more is refused.",
    )

    class Meta:
        db_table = "gateway_apikey"
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.team.name}/{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, *, team: Team, name: str, scopes: list[str] | None = None, **fields) -> tuple[ApiKey, str]:
        """Create a key and return it with the raw key, which is not kept."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(
            team=team, name=name, prefix=raw[:10], key_hash=hash_key(raw), scopes=scopes or ["chat"], **fields
        )
        return key, raw

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


class Membership(models.Model):
    """A dashboard user's place in a team: a lead sees the team's costs and budgets.

    Operators (the "operators" group) and superusers need no membership: they
    see every team.
    """

    ROLES = [("lead", "Team lead"), ("member", "Member")]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=ROLES, default="member")

    class Meta:
        db_table = "gateway_membership"
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class AuditEntry(models.Model):
    """Who changed routing, providers, budgets or keys, when, from what to what.

    Written by the dashboard's services; `before` and `after` are plain JSON
    snapshots of the changed object and never hold a secret.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept if the user is deleted.")
    action = models.CharField(max_length=40, help_text="e.g. persona.update, route.reorder, budget.create")
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "gateway_auditentry"
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target_label}"
