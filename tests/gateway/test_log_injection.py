"""A logged value cannot forge a log line: control characters in it (a newline
above all) are escaped in the plain format (make run's server) and stay
inside one JSON object in the JSON format (the default in production).

The value here is a route step's model name with a newline, stored before
model names were validated (it is refused now: tests/security/
test_persona_map_validation.py), whose provider fails, so the pipeline logs
"provider <name>/<model> failed"."""

from __future__ import annotations

import json

import httpx
import pytest

from personas.models import Persona, RouteStep
from providers.models import Provider

FORGED = "2026-01-01 00:00:00,000 ERROR gateway.pipeline [-] forged record"
MODEL = f"demo\n{FORGED}\r\n\u2028{FORGED} (after a line separator)\x1b[2J"


@pytest.fixture
def legacy_route(world):
    failing = Provider.objects.create(name="failing", kind="demo", options={"fail_with": "bad_request"})
    persona = Persona.objects.create(slug="legacy")
    RouteStep.objects.create(persona=persona, provider=failing, model=MODEL)  # no full_clean: an old row
    return persona


def _fails(server, key: str) -> str:
    response = httpx.post(server.url + "/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {key}"},
                          json={"model": "legacy", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "provider_bad_request", response.text
    return response.headers["X-Request-ID"]


@pytest.mark.slow
def test_a_newline_in_a_logged_value_does_not_forge_a_plain_line(dev_server, transactional_db, world, legacy_route):
    request_id = _fails(dev_server, world.red_key)
    lines = dev_server.log_text().splitlines()
    mine = [line for line in lines if f"[{request_id}]" in line and "failed (bad_request)" in line]
    assert len(mine) == 1, lines[-20:]
    assert "demo\\n2026-01-01 00:00:00,000 ERROR" in mine[0] and "\\u2028" in mine[0] and "\\x1b[2J" in mine[0]
    assert not [line for line in lines if line.startswith(FORGED)]


def test_a_newline_in_a_logged_value_stays_inside_one_json_line(live, world, legacy_route):
    request_id = _fails(live, world.red_key)
    # splitlines() also splits at U+2028, as some log readers do: each piece must still be a whole record.
    mine = [line for line in live.log_text().splitlines() if request_id in line and "failed (bad_request)" in line]
    assert len(mine) == 1
    assert json.loads(mine[0])["message"].startswith(f"provider failing/{MODEL} failed")
