"""A gateway stopped after it called a provider closes its SDK clients: no
"Unclosed client session" (aiohttp, under the OpenAI SDK) in its log at
shutdown (daphne, as make run serves it)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import start_daphne, stop_process

pytestmark = pytest.mark.slow


def test_a_stopped_gateway_leaves_no_unclosed_client_session(live, test_database_url, world, via_fake):
    server = start_daphne(test_database_url, name="gateway-shutdown")
    try:
        answer = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {world.red_key}"},
                            json={"model": "via-openai", "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert via_fake.call_count == 1  # the aiohttp session under the OpenAI SDK is open
    finally:
        stop_process(server.process)
    log = server.log_text()
    assert "Killed 0 pending application instances" in log  # daphne stopped, as on Ctrl-C
    assert "Unclosed client session" not in log and "Unclosed connector" not in log, log[-2000:]
