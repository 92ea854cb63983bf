"""Who calls the gateway: teams and their API keys."""

from __future__ import annotations

import hashlib
import secrets

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

    class Meta:
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
