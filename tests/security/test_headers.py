"""Dashboard hardening: security headers on pages and API answers, session and
CSRF cookies, CSRF on every form. Websockets check origin and key before
accept: tests/api/test_websocket.py::test_the_handshake_is_refused_before_accept
and tests/gateway/test_live_events.py::test_the_feed_needs_an_admin_key_or_staff."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from config.security_headers import DATA_POLICY, PAGE_POLICY
from tests.dashboard.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db


def _assert_hardened(response, policy: str) -> None:
    headers = getattr(response, "headers", response)  # a Django test response or an httpx one
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Content-Security-Policy"] == policy


@pytest.mark.parametrize("path", ["/login/", "/dashboard/", "/dashboard/personas/", "/dashboard/providers/demo/",
                                  "/dashboard/costs/", "/dashboard/keys/"])
def test_every_dashboard_page_is_sent_with_the_security_headers(people, path):
    response = (Client() if path == "/login/" else client_for(people.olive)).get(path)
    assert response.status_code == 200
    _assert_hardened(response, PAGE_POLICY)


def test_the_page_policy_allows_only_this_sites_scripts_and_no_framing():
    directives = dict(d.split(" ", 1) for d in PAGE_POLICY.split("; "))
    assert directives["script-src"] == "'self'"  # no inline script, no CDN
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "'unsafe-eval'" not in PAGE_POLICY


def test_pages_have_no_inline_script_the_policy_would_block(people):
    import re

    for path in ("/dashboard/", "/dashboard/personas/architect/", "/login/"):
        html = (Client() if path == "/login/" else client_for(people.olive)).get(path).content.decode()
        scripts = re.findall(r"<script\b([^>]*)>", html)
        assert scripts and all("src=" in attributes for attributes in scripts), scripts
        assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers either


@pytest.mark.django_db(transaction=True)  # the key is looked up from another thread
def test_api_answers_allow_nothing_to_render(world):
    response = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {world.red_key}")
    assert response.status_code == 200
    _assert_hardened(response, DATA_POLICY)
    refused = Client().get("/v1/models")
    assert refused.status_code == 401
    _assert_hardened(refused, DATA_POLICY)


def test_session_and_csrf_cookies_are_httponly_samesite_and_secure_outside_debug(people):
    assert settings.DEBUG is False
    client = Client()
    client.get("/login/")
    response = client.post("/login/", {"username": "rita", "password": PASSWORD})
    assert response.status_code == 302
    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session["httponly"] and session["samesite"] == "Lax" and session["secure"]
    csrf = client.cookies[settings.CSRF_COOKIE_NAME]
    assert csrf["samesite"] == "Lax" and csrf["secure"]


def test_the_live_server_sends_them_on_api_answers_and_pages_too(live, world):
    import httpx

    api_answer = httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {world.red_key}"})
    assert api_answer.status_code == 200
    _assert_hardened(api_answer, DATA_POLICY)
    _assert_hardened(httpx.get(live.url + "/v1/models"), DATA_POLICY)  # a refusal too
    _assert_hardened(httpx.get(live.url + "/login/"), PAGE_POLICY)
