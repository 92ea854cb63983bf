"""The dashboard's fixture world and a real headless Chromium.

People (all with password PASSWORD):
- olive, an operator; ada, an admin (superuser);
- rita, lead of team red; bruno, lead of team blue;
- max, a plain member of team red (no lead role).
Browser tests drive Debian's chromium through Playwright (never `playwright
install`: nothing is downloaded) against the `live` daphne server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS

PASSWORD = "correct horse battery staple 7"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# The screen widths every page is checked at: a common laptop and a desktop.
WIDTHS = (1366, 1920)
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class People:
    olive: object
    ada: object
    rita: object
    bruno: object
    max: object


@pytest.fixture(scope="session")
def password_hash() -> str:
    # Hashed once: the real hasher takes most of a second per user, and the
    # live server must verify it with the same (production) hashers.
    from django.contrib.auth.hashers import make_password

    return make_password(PASSWORD)


@pytest.fixture
def people(world, password_hash) -> People:
    from django.contrib.auth.models import Group, User

    from accounts.models import Membership
    from accounts.roles import OPERATORS

    def user(name: str, **extra):
        return User.objects.create(username=name, password=password_hash, **extra)

    olive = user("olive")
    # Migration 0002 makes the group; transactional tests flush it away, hence get_or_create.
    olive.groups.add(Group.objects.get_or_create(name=OPERATORS)[0])
    ada = user("ada", is_superuser=True, is_staff=True)
    rita, bruno, max_ = user("rita"), user("bruno"), user("max")
    Membership.objects.create(user=rita, team=world.red, role="lead")
    Membership.objects.create(user=bruno, team=world.blue, role="lead")
    Membership.objects.create(user=max_, team=world.red, role="member")
    return People(olive, ada, rita, bruno, max_)


def client_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


# -- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Playwright's sync API keeps an event loop running in this thread, and
    # Django then refuses ORM calls from the test body. They are plain sync
    # calls, so allow them, but only while this module's browser is open.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live):
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    watch_console(page)
    yield page
    context.close()
    assert not page.console_errors, f"Errors in the browser console: {page.console_errors}"


def at_width(page, width: int, height: int = 900) -> None:
    page.set_viewport_size({"width": width, "height": height})


def watch_console(page) -> None:
    """Collect, on `page.console_errors`, every uncaught exception and every
    console message of type error: a CSP refusal (an eval htmx needed, a
    script from a CDN), a failed load, a websocket that could not open only
    reach the console, never `pageerror`."""
    page.console_errors = []
    page.expected_errors = []
    page.on("pageerror", lambda error: page.console_errors.append(f"uncaught: {error}"))

    def on_console(message) -> None:
        if message.type != "error":
            return
        text = f"{message.text} ({message.location['url']})"
        if not any(expected in text for expected in page.expected_errors):
            page.console_errors.append(text)

    page.on("console", on_console)


def expect_console_error(page, text: str) -> None:
    """Declare one console error the test causes on purpose: Chromium logs
    every 4xx page load ("... status of 400 (Bad Request) (url)"), such as a
    form sent back with its errors. Anything else still fails the test."""
    page.expected_errors.append(text)


def log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/")


class FormSession:
    """A browser's session over plain HTTP against the live server: form posts
    with the CSRF token, cookies kept by hand. The live server (DEBUG off)
    marks its cookies Secure, which httpx sends only over https, while
    browsers send them to 127.0.0.1 too."""

    def __init__(self, live, *, from_address: str = "127.0.0.1") -> None:
        # Another loopback address (127.0.0.2) is another client address for the server.
        self.client = httpx.Client(base_url=live.url, timeout=30,
                                   transport=httpx.HTTPTransport(local_address=from_address))
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), **kwargs.pop("headers", {})}
        response = self.client.request(method, path, headers=headers, **kwargs)
        for header in response.headers.get_list("set-cookie"):
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict, **kwargs) -> httpx.Response:
        if "csrftoken" not in self.cookies:
            self.get("/login/")
        return self.request("POST", path, data={**data, "csrfmiddlewaretoken": self.cookies["csrftoken"]}, **kwargs)

    def log_in(self, username: str, password: str = PASSWORD, path: str = "/login/") -> httpx.Response:
        """The login form posted; a success is a redirect (302), a refusal the page again."""
        self.get(path)
        return self.post(path, {"username": username, "password": password})


def screenshot(page, name: str) -> Path:
    # Template syntax on the page is a template bug (a {# #} comment over several lines prints as text).
    text = page.locator("body").inner_text()
    assert "{#" not in text and "{%" not in text and "{{" not in text, f"template syntax on {page.url}"
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
