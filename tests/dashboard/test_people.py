"""People from the dashboard: an admin invites a team lead or an operator on
the Keys & teams page (audited); the invitee chooses a password through a
one-use link and sees what the role allows; a lost password is a new link."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from accounts.models import AuditEntry, Membership
from accounts.roles import is_operator
from tests.dashboard.conftest import WIDTHS, at_width, expect_console_error, log_in, screenshot

pytestmark = pytest.mark.browser
NEW_PASSWORD = "a long new password for lena 42"


def invite(page, username: str, role: str, team: str | None = None, email: str = "") -> None:
    form = page.locator("#invite")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Email").fill(email)
    form.get_by_label("Role").select_option(role)
    if team:
        form.get_by_label("Team").select_option(label=team)
    form.get_by_role("button", name="Invite").click()


def invitation_link(page) -> str:
    return page.get_by_test_id("invite-link").inner_text().strip()


def choose_password(page, link: str, password: str) -> None:
    page.goto(link)
    page.get_by_label("New password", exact=True).fill(password)
    page.get_by_label("New password confirmation").fill(password)
    page.get_by_role("button", name="Set password").click()
    expect(page.locator(".messages")).to_contain_text("Password set for")


def log_out(page) -> None:
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login/")


@pytest.mark.parametrize("width", WIDTHS)
def test_an_admin_invites_a_team_lead_who_sets_a_password_and_sees_their_team(page, live, world, people, width):
    at_width(page, width)
    log_in(page, "ada")
    page.goto("/dashboard/keys/")
    # A lead needs a team: the form says so (a 400 page, which Chromium logs).
    expect_console_error(page, "status of 400 (Bad Request)")
    invite(page, "lena", "lead")
    expect(page.locator("#invite .field.has-error")).to_contain_text("A team lead or member needs a team.")
    invite(page, "lena", "lead", team="red", email="lena@example.test")
    link = invitation_link(page)
    assert link.startswith(f"{live.url}/login/set-password/")
    expect(page.locator("#invitation")).to_contain_text("It was also mailed to lena@example.test")
    expect(page.locator("#people tr[data-user=lena]")).to_contain_text("team lead of red")
    expect(page.locator("#people tr[data-user=lena]")).to_contain_text("invited, no password yet")
    screenshot(page, f"keys-invite-{width}")
    entry = AuditEntry.objects.get(action="user.invite")
    assert (entry.actor_name, entry.target_label) == ("ada", "lena")
    assert entry.after == {"username": "lena", "email": "lena@example.test", "role": "lead", "team": "red"}
    assert link not in str(entry.after) + entry.summary  # the link is a secret, like a key

    log_out(page)
    choose_password(page, link, NEW_PASSWORD)
    page.get_by_label("Username").fill("lena")
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Costs")).to_be_visible()
    expect(nav.get_by_role("link", name="Personas")).to_have_count(0)
    assert Membership.objects.get(user__username="lena").team == world.red
    page.goto(link)  # used once: dead
    expect(page.get_by_role("alert")).to_contain_text("has been used already or has expired")


def test_an_operator_is_invited_and_a_lost_password_gets_a_new_link(page, live, world, people):
    log_in(page, "ada")
    page.goto("/dashboard/keys/")
    invite(page, "otto", "operator")
    first = invitation_link(page)
    expect(page.locator("#invitation")).not_to_contain_text("mailed")  # no address, nothing mailed
    log_out(page)
    choose_password(page, first, NEW_PASSWORD)
    from django.contrib.auth.models import User

    otto = User.objects.get(username="otto")
    assert is_operator(otto) and otto.check_password(NEW_PASSWORD)

    log_in(page, "ada")
    page.goto("/dashboard/keys/")
    page.get_by_role("button", name="New invitation link for otto").click()
    second = invitation_link(page)
    assert second != first
    otto.refresh_from_db()
    assert not otto.has_usable_password()  # the lost password stops working at once
    assert AuditEntry.objects.filter(action="user.reinvite", target_label="otto").count() == 1
    log_out(page)
    choose_password(page, second, NEW_PASSWORD + " again")
    otto.refresh_from_db()
    assert otto.check_password(NEW_PASSWORD + " again")
