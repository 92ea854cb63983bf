"""The API's lean path through config.asgi (ApiHandler), against a live daphne:
the same answers and security headers as the dashboard's full chain, without
the session and CSRF machinery; dashboard paths keep the full chain."""

from __future__ import annotations

import httpx

from api.middleware import LedgerMiddleware
from config.asgi import ApiSecurityHeaders, api_middleware
from config.security_headers import DATA_POLICY, ContentSecurityPolicyMiddleware


def _assert_hardened(response: httpx.Response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Content-Security-Policy"] == DATA_POLICY


def test_the_api_chain_keeps_only_natively_async_middleware():
    chain = api_middleware()
    assert chain[:2] == [LedgerMiddleware, ApiSecurityHeaders]
    assert ContentSecurityPolicyMiddleware in chain
    assert all(not m.__module__.startswith(("django.", "django_htmx.", "axes.")) for m in chain)


def test_an_api_answer_is_hardened_and_sets_no_cookie(live, world):
    body = {"model": "architect", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {world.red_key}"})
    assert response.status_code == 200
    _assert_hardened(response)
    assert response.headers["X-Request-ID"].startswith("req_")
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert "set-cookie" not in response.headers and "Cookie" not in response.headers.get("Vary", "")


def test_a_refusal_and_an_unknown_api_path_are_hardened_json(live, world):
    refused = httpx.get(f"{live.url}/v1/models", timeout=30)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    _assert_hardened(refused)
    missing = httpx.get(f"{live.url}/api/v1/nothing-here", timeout=30,
                        headers={"Authorization": f"Bearer {world.red_key}"})
    assert missing.status_code == 404 and missing.json()["error"]["type"]
    _assert_hardened(missing)


def test_a_stream_through_the_api_path_is_hardened(live, world):
    body = {"model": "architect", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {world.red_key}"}) as response:
        text = "".join(response.iter_text())
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == DATA_POLICY
    assert text.rstrip().endswith("data: [DONE]")


def test_the_dashboard_keeps_the_full_chain(live):
    response = httpx.get(f"{live.url}/login/", timeout=30)
    assert response.status_code == 200
    assert "csrftoken" in response.headers.get("set-cookie", "")
    assert response.headers["X-Frame-Options"] == "DENY"
