"""Who may do what in the dashboard.

- admins (superusers): everything, and Django admin;
- operators (the "operators" group): edit personas, routes, providers, budgets,
  keys; see every team's costs;
- team leads (Membership role "lead"): see the costs and budgets of their own
  teams only;
- members: may log in, and see nothing of the money until made a lead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from accounts.models import Membership

OPERATORS = "operators"


def is_admin(user) -> bool:
    return bool(user.is_authenticated and user.is_superuser)


def is_operator(user) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: the nav asks on every page.
    if not hasattr(user, "_ep_is_operator"):
        user._ep_is_operator = user.groups.filter(name=OPERATORS).exists()
    return user._ep_is_operator


def visible_team_ids(user) -> set[int] | None:
    """The teams whose money this user may see; None means every team."""
    if is_operator(user):
        return None
    return set(Membership.objects.filter(user=user, role="lead").values_list("team_id", flat=True))


def can_see_costs(user) -> bool:
    teams = visible_team_ids(user)
    return teams is None or bool(teams)


def _requiring(check: Callable[[object], bool]):
    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not check(request.user):
                raise PermissionDenied("Your dashboard role does not allow this page.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def async_operator_required(view):
    """operator_required for async views (the playground, test connection)."""

    @wraps(view)
    async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = await request.auser()
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not await sync_to_async(is_operator)(user):
            raise PermissionDenied("Only operators may do this.")
        return await view(request, *args, **kwargs)

    return wrapper


operator_required = _requiring(is_operator)
admin_required = _requiring(is_admin)
costs_required = _requiring(can_see_costs)


def role_context(user) -> dict:
    """What the nav may link to; every dashboard page gets it."""
    return {"admin": is_admin(user), "operator": is_operator(user), "costs": can_see_costs(user)}
