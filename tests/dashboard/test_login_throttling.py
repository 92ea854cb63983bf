"""Login throttling (django-axes) on /login/ and /admin/login/, through the
live server's login forms: after EP_LOGIN_FAILURE_LIMIT (5) wrong passwords
for a username, or from an address, the next try is refused even with the
right password, with a page that says why; `axes_reset` unlocks it."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.dashboard.conftest import FormSession

pytestmark = pytest.mark.slow  # each try runs the password hasher

WRONG = "not the password"


def words(response) -> str:
    return " ".join(response.text.split())


LOCKED = "Logging in is locked: there were 5 failed attempts for this username or from this address."


def test_the_sixth_try_is_refused_even_with_the_right_password_until_an_admin_resets(live, people):
    assert settings.AXES_FAILURE_LIMIT == 5
    session = FormSession(live)
    wrong = [session.log_in("olive", WRONG) for _ in range(settings.AXES_FAILURE_LIMIT)]
    # Each failure before the limit answers the login page again; the one that reaches it, the locked page.
    assert [r.status_code for r in wrong] == [200] * 4 + [429]
    assert "That username and password do not match an account." in wrong[0].text
    right = session.log_in("olive")
    assert right.status_code == 429 and LOCKED in words(right)
    assert "Try again in 15 minutes" in words(right) and "sessionid" not in session.cookies
    assert session.get("/dashboard/").status_code == 302  # still not logged in

    # Per username: olive is locked from another address too, ada from this one (per address) ...
    elsewhere = FormSession(live, from_address="127.0.0.2")
    assert elsewhere.log_in("olive").status_code == 429
    assert FormSession(live).log_in("ada").status_code == 429
    # ... and the admin's own login form counts and refuses the same.
    assert FormSession(live).log_in("ada", path="/admin/login/").status_code == 429
    # Someone else from another address is not affected.
    assert FormSession(live, from_address="127.0.0.2").log_in("rita").status_code == 302

    call_command("axes_reset", verbosity=0)  # the admin unlocks
    assert session.log_in("olive").status_code == 302
    assert session.get("/dashboard/").status_code == 200


def test_wrong_passwords_on_the_admin_login_lock_it_too(live, people):
    admin = FormSession(live, from_address="127.0.0.3")
    statuses = [admin.log_in("ada", WRONG, path="/admin/login/").status_code for _ in range(5)]
    assert statuses == [200] * 4 + [429]
    refused = admin.log_in("ada", path="/admin/login/")
    assert refused.status_code == 429 and LOCKED in words(refused)
    assert FormSession(live).log_in("ada").status_code == 429  # the dashboard's form: the same username
    call_command("axes_reset_username", "ada", verbosity=0)
    assert FormSession(live).log_in("ada").status_code == 302
