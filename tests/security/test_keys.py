"""API keys: only hashes are stored, a key in a URL is refused, and a failed
authentication says nothing about whether the key exists."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import httpx
from django.core import serializers
from django.utils import timezone

from accounts.models import ApiKey


def test_only_the_hash_of_a_key_is_stored(world):
    dump = serializers.serialize("json", ApiKey.objects.all())
    for raw in (world.red_key, world.blue_key, world.admin_key, world.direct_key):
        assert raw not in dump and raw[10:] not in dump  # not even the part after the shown prefix
        assert ApiKey.objects.filter(key_hash=hashlib.sha256(raw.encode()).hexdigest()).count() == 1


def test_a_key_in_the_query_string_is_refused_even_beside_a_valid_header(live, world):
    for param, path in zip(["api_key", "key", "token", "API_KEY", "access_token"],
                           ["/v1/models", "/costs", "/api/v1/runs", "/health", "/capabilities"]):
        response = httpx.get(live.url + path, params={param: world.red_key},
                             headers={"Authorization": f"Bearer {world.red_key}"})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == "key_in_query_string"
        assert world.red_key not in response.text
    chat = httpx.post(live.url + "/v1/chat/completions", params={"api_key": "anything"}, json={
        "model": "architect", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {world.red_key}"})
    assert chat.status_code == 400 and chat.json()["error"]["code"] == "key_in_query_string"


def test_unknown_revoked_and_expired_keys_get_the_same_answer(live, world):
    _, revoked = ApiKey.issue(team=world.red, name="revoked", revoked_at=timezone.now())
    _, expired = ApiKey.issue(team=world.red, name="expired", expires_at=timezone.now() - timedelta(minutes=1))
    unknown = "ep-" + "x" * 43
    answers = {}
    for name, key in {"unknown": unknown, "revoked": revoked, "expired": expired}.items():
        for path in ("/v1/models", "/v1/chat/completions"):
            method = "GET" if path == "/v1/models" else "POST"
            response = httpx.request(method, live.url + path, headers={"Authorization": f"Bearer {key}"},
                                     json={"model": "architect", "messages": [{"role": "user", "content": "x"}]})
            body = response.json()
            body["error"].pop("request_id")
            answers[(name, path)] = (response.status_code, body, sorted(h for h in response.headers
                                                                         if h.lower().startswith("x-ep")))
    for path in ("/v1/models", "/v1/chat/completions"):
        assert answers[("unknown", path)] == answers[("revoked", path)] == answers[("expired", path)]
    status, body, _ = answers[("unknown", "/v1/models")]
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
