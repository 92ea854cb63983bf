"""Dashboard pages of the gateway core: login, overview, keys and teams, audit."""

from __future__ import annotations

import logging
import re
import smtplib
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import services
from accounts.models import ApiKey, AuditEntry, Team
from accounts.roles import OPERATORS, admin_required, operator_required, visible_team_ids
from budgets import selectors
from budgets.models import Alert
from dashboard.forms import InviteForm, KeyForm, MembershipForm, TeamForm
from dashboard.rendering import render_page
from providers.models import Provider

FEED_ROWS = 15
ISO_MOMENT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")
log = logging.getLogger("dashboard.views")


class LoginView(auth_views.LoginView):
    template_name = "login.html"
    redirect_authenticated_user = True
    next_page = "/dashboard/"  # unless ?next= names a page of this site


logout = auth_views.LogoutView.as_view(next_page="/login/")


def login_locked(request: HttpRequest, original_response: HttpResponse | None = None,
                 credentials: dict | None = None) -> HttpResponse:
    """What /login/ and /admin/login/ answer while django-axes holds a lockout
    (settings.AXES_LOCKOUT_CALLABLE): the reason and the wait, in words."""
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    context = {"failure_limit": settings.AXES_FAILURE_LIMIT, "minutes": minutes}
    return render(request, "login_locked.html", context, status=429)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard:overview")


def _feed(team_ids: set[int] | None) -> dict:
    alerts = Alert.objects.select_related("budget").filter(acknowledged_at__isnull=True)
    if team_ids is not None:
        alerts = alerts.filter(budget__in=selectors.budgets_visible(team_ids=team_ids))
    rows = selectors.usage_visible(team_ids=team_ids).select_related("team")[:FEED_ROWS]
    return {"feed_rows": rows, "feed_alerts": alerts[:5]}


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    team_ids = visible_team_ids(request.user)
    if request.htmx and request.GET.get("part") == "feed":
        return render_page(request, "overview.html", _feed(team_ids), fragment="feed")
    now = timezone.now()
    context = {
        "team_ids": team_ids,
        "spend_today": selectors.spend_total(team_ids=team_ids, since=selectors.day_start(now)),
        "spend_month": selectors.spend_total(team_ids=team_ids, since=selectors.period_start("month", now)),
        "stats": selectors.request_stats(team_ids=team_ids, since=now - timedelta(hours=24)),
        "budget_uses": selectors.budget_uses(team_ids=team_ids),
        # The event socket carries every team's events: those who see every team.
        "live_over_websocket": team_ids is None,
        **_feed(team_ids),
    }
    if team_ids is None:  # provider health is for those who run the providers
        health = selectors.provider_stats(since=now - timedelta(hours=1))
        context["providers"] = [(p, health.get(p.name)) for p in Provider.objects.order_by("name")]
    return render_page(request, "overview.html", context)


def _keys_page(request: HttpRequest, *, key_form=None, team_form=None, member_form=None, invite_form=None,
               new_key=None, invited=None, status: int = 200) -> HttpResponse:
    context = {
        "teams": Team.objects.prefetch_related("api_keys", "memberships__user").order_by("name"),
        "key_form": key_form or KeyForm(), "team_form": team_form or TeamForm(),
        "member_form": member_form or MembershipForm(), "invite_form": invite_form or InviteForm(prefix="invite"),
        "new_key": new_key, "invited": invited,
    }
    if request.user.is_superuser:
        context["people"] = _people()
    return render_page(request, "keys.html", context, status=status)


def _people() -> list[dict]:
    users = get_user_model().objects.prefetch_related("groups", "memberships__team").order_by("username")
    return [{"user": u, "roles": _roles_of(u), "pending": not u.has_usable_password()} for u in users]


def _roles_of(user) -> str:
    """"admin", "operator", "team lead of red", "member of blue", or "no role"."""
    roles = ["admin"] if user.is_superuser else []
    roles += ["operator" for group in user.groups.all() if group.name == OPERATORS]
    roles += [f"{m.get_role_display().lower()} of {m.team.name}" for m in user.memberships.all()]
    return ", ".join(roles) or "no role"


def _invite_link(request: HttpRequest, user) -> str:
    """A one-use link to choose a password (Django's password-reset token: it
    dies once the password is set, or after PASSWORD_RESET_TIMEOUT)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return request.build_absolute_uri(reverse("set_password", args=[uid, default_token_generator.make_token(user)]))


def _invitation_sent(request: HttpRequest, user, link: str) -> dict:
    """The link for the page (shown once, like a new key) and, if the user has
    an address, by mail; whether the mail went out is said, not assumed."""
    mailed = False
    if user.email:
        try:
            send_mail("Your Execution Platform dashboard login",
                      f"Hello {user.username},\n\nchoose your password here (the link works once):\n{link}\n",
                      None, [user.email])
            mailed = True
        except (OSError, smtplib.SMTPException):
            log.warning("the invitation mail to user %s could not be sent", user.pk)
    return {"user": user, "link": link, "mailed": mailed}


@admin_required
@require_POST
def user_invite(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST, prefix="invite")  # its field ids stay apart from the other forms'
    if not form.is_valid():
        return _keys_page(request, invite_form=form, status=400)
    user = services.user_invite(actor=request.user, **form.cleaned_data)
    return _keys_page(request, invited=_invitation_sent(request, user, _invite_link(request, user)))


@admin_required
@require_POST
def user_reinvite(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    services.user_reinvite(actor=request.user, user=user)
    return _keys_page(request, invited=_invitation_sent(request, user, _invite_link(request, user)))


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """Where an invitation link leads: the person chooses their password, then logs in."""

    template_name = "set_password.html"
    success_url = reverse_lazy("login")

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, f"Password set for {form.user.username}. Log in with it now.")
        return response


@operator_required
@require_http_methods(["GET", "POST"])
def keys(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _keys_page(request)
    form = KeyForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, key_form=form, status=400)
    key, raw = services.key_create(actor=request.user, **form.cleaned_data)
    # Rendered, not redirected: the raw key exists only in this response.
    return _keys_page(request, new_key={"key": key, "raw": raw})


@operator_required
@require_POST
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(ApiKey.objects.select_related("team"), pk=key_id)
    if services.key_revoke(actor=request.user, key=key):
        messages.success(request, f"Key '{key.name}' ({key.prefix}…) of team '{key.team.name}' is revoked.")
    return redirect("dashboard:keys")


@admin_required
@require_POST
def team_create(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, team_form=form, status=400)
    team = services.team_create(actor=request.user, name=form.cleaned_data["name"])
    messages.success(request, f"Team '{team.name}' created.")
    return redirect("dashboard:keys")


@admin_required
@require_POST
def membership_set(request: HttpRequest) -> HttpResponse:
    form = MembershipForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, member_form=form, status=400)
    m = services.membership_set(actor=request.user, **form.cleaned_data)
    messages.success(request, f"{m.user.username} is now {m.get_role_display().lower()} of team '{m.team.name}'.")
    return redirect("dashboard:keys")


@operator_required
@require_GET
def audit(request: HttpRequest) -> HttpResponse:
    entries = AuditEntry.objects.all()
    if request.GET.get("action"):
        entries = entries.filter(action__startswith=request.GET["action"])
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    action = request.GET.get("action", "")
    rows = [(entry, _changes(entry.before, entry.after)) for entry in page]
    return render_page(request, "audit.html", {"page": page, "rows": rows, "action": action,
                                               "query": f"action={action}" if action else ""})


def _changes(before, after) -> list[tuple[str, str, str]]:
    """An entry's before and after as (what, from, to) lines a person reads: the
    fields that changed (all of them for a creation or removal), values in words."""
    if not isinstance(before, dict) and not isinstance(after, dict):
        return [] if before is None and after is None else [("", _readable(before), _readable(after))]
    before, after = before or {}, after or {}
    names = [name for name in {**before, **after} if before.get(name) != after.get(name)]
    return [(name.replace("_", " "), _readable(before.get(name)), _readable(after.get(name))) for name in names]


def _readable(value) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_readable(item) for item in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_readable(v)}" for k, v in value.items()) or "none"
    if isinstance(value, str) and ISO_MOMENT.match(value):  # audit snapshots keep times as ISO text
        return f"{datetime.fromisoformat(value):%Y-%m-%d %H:%M:%S} UTC"
    return str(value)
