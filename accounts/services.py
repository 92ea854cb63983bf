"""Writes to teams, memberships and API keys; each dashboard change leaves an AuditEntry."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import ApiKey, Membership, Team
from accounts.roles import OPERATORS
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


# -- people --------------------------------------------------------------------------

# What a person may do in the dashboard (accounts/roles.py): a lead or member
# belongs to one team; an operator or admin sees every team.
USER_ROLES = [("lead", "Team lead (sees their team's costs and budgets)"),
              ("member", "Member (logs in; sees no money until made a lead)"),
              ("operator", "Operator (routes, providers, budgets, keys; every team)"),
              ("admin", "Admin (everything, and Django admin)")]
TEAM_ROLES = ("lead", "member")


def _role_grant(user, *, role: str, team: Team | None) -> None:
    if role in TEAM_ROLES:
        Membership.objects.update_or_create(user=user, team=team, defaults={"role": role})
    elif role == "operator":
        user.groups.add(Group.objects.get_or_create(name=OPERATORS)[0])
    elif role == "admin":
        user.is_superuser = user.is_staff = True
        user.save(update_fields=["is_superuser", "is_staff"])


@transaction.atomic
def user_invite(*, actor, username: str, email: str, role: str, team: Team | None):
    """A new dashboard user with no password yet: they choose one through the
    invitation link (dashboard.views.invite_link), which the caller hands over."""
    user = get_user_model().objects.create_user(username=username, email=email, password=None)
    _role_grant(user, role=role, team=team)
    where = f" of team '{team.name}'" if team is not None and role in TEAM_ROLES else ""
    audit_record(actor=actor, action="user.invite", target=user, label=username,
                 summary=f"Invited {username} as {role}{where}",
                 after={"username": username, "email": email, "role": role,
                        "team": team.name if team is not None and role in TEAM_ROLES else None})
    return user


@transaction.atomic
def user_reinvite(*, actor, user) -> None:
    """A fresh invitation for someone who lost their password: the old one stops
    working, so nobody logs in with it while the link is on its way."""
    user.set_unusable_password()
    user.save(update_fields=["password"])
    audit_record(actor=actor, action="user.reinvite", target=user, label=user.username,
                 summary=f"New invitation link for {user.username}; their old password no longer works")


@transaction.atomic
def admin_password_reset(*, actor, username: str) -> str:
    """A new random password for a dashboard user (the first admin's, by default,
    from `manage.py reset_admin_password`); returned once, never stored or audited."""
    user = get_user_model().objects.get(username=username)
    password = secrets.token_urlsafe(12)
    user.set_password(password)
    user.is_active = True
    user.save(update_fields=["password", "is_active"])
    audit_record(actor=actor, action="user.password_reset", target=user, label=username,
                 summary=f"Password of {username} reset from the command line")
    return password


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
