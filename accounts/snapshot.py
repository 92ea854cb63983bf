"""What the request path knows of an API key, held in memory (gateway/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from accounts.models import ApiKey


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    team_id: int
    team_name: str
    name: str
    prefix: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    key_hash: str = field(default="", repr=False)
    max_output_tokens: int | None = None  # the key's cap on max_tokens (ApiKey.max_output_tokens)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def load_key(key_hash: str) -> KeyInfo | None:
    key = ApiKey.objects.select_related("team").filter(key_hash=key_hash).first()
    if key is None:
        return None
    return KeyInfo(
        key.id, key.team_id, key.team.name, key.name, key.prefix, frozenset(key.scopes or ()),
        key.expires_at, key.revoked_at is not None, key.key_hash, key.max_output_tokens,
    )
