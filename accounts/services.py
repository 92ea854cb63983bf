"""Writes to teams, memberships and API keys; each dashboard change leaves an AuditEntry."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import ApiKey, Membership, Team
from accounts.snapshot import KeyInfo, load_key


@transaction.atomic
def team_create(*, actor, name: str) -> Team:
    team = Team.objects.create(name=name)
    audit_record(actor=actor, action="team.create", target=team, summary=f"Created team '{name}'",
                 after={"name": name})
    return team


@transaction.atomic
def membership_set(*, actor, team: Team, username: str, role: str) -> Membership:
    user = get_user_model().objects.get(username=username)
    membership, created = Membership.objects.get_or_create(user=user, team=team, defaults={"role": role})
    before = None if created else {"role": membership.role}
    membership.role = role
    membership.save()
    audit_record(actor=actor, action="membership.set", target=membership, label=f"{username} in {team.name}",
                 summary=f"{username} is now {membership.get_role_display().lower()} of team '{team.name}'",
                 before=before, after={"role": role})
    return membership


@transaction.atomic
def key_create(*, actor, team: Team, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Issue a key; the raw key is returned once and never stored or audited."""
    key, raw = ApiKey.issue(team=team, name=name, scopes=scopes)
    audit_record(actor=actor, action="key.create", target=key, label=f"{team.name}/{name}",
                 summary=f"Created key '{name}' ({key.prefix}…) for team '{team.name}' with scopes {', '.join(scopes)}",
                 after={"team": team.name, "name": name, "prefix": key.prefix, "scopes": scopes})
    return key, raw


@transaction.atomic
def key_revoke(*, actor, key: ApiKey) -> bool:
    if key.revoked_at is not None:
        return False
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit_record(actor=actor, action="key.revoke", target=key, label=f"{key.team.name}/{key.name}",
                 summary=f"Revoked key '{key.name}' ({key.prefix}…) of team '{key.team.name}'",
                 before={"revoked_at": None}, after={"revoked_at": key.revoked_at.isoformat()})
    return True


DASHBOARD_TEAM = "dashboard"


@transaction.atomic
def playground_key_ensure(user) -> KeyInfo:
    """A dashboard user's key in the "dashboard" team, for the playground and the
    staff websocket (created on first use; its raw value is never kept), so their
    tries are Usage rows that costs and budgets see like any other."""
    team, _ = Team.objects.get_or_create(name=DASHBOARD_TEAM)
    name = f"playground: {user.username}"[:100]
    key = ApiKey.objects.filter(team=team, name=name, revoked_at__isnull=True).first()
    if key is None:
        key, _raw = ApiKey.issue(team=team, name=name, scopes=["chat"])
    return load_key(key.key_hash)
