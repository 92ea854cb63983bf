"""A key sent in a URL is refused, over HTTP and at the websocket handshake,
`?x-api-key=` included, and the servers' access logs do not keep it: daphne's
(make run, config/devserver.py) and uvicorn's log the path without its query string."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ROOT, _free_port, server_env, stop_process
from tests.streaming_support import ws_url

SECRET = "url-canary-0f9e8d7c6b5a"  # not key-shaped, so only the scrubbing can keep it out of a log


def _handshake(url: str) -> int:
    async def attempt() -> int:
        try:
            async with connect(url, open_timeout=5):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    return asyncio.run(attempt())


@pytest.mark.parametrize("param", ["x-api-key", "X-Api-Key", "x_api_key", "x-goog-api-key", "api_key", "token"])
def test_a_key_in_the_url_is_refused_by_any_of_its_names(live, world, param):
    response = httpx.get(live.url + "/v1/models", params={param: SECRET},
                         headers={"Authorization": f"Bearer {world.red_key}"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "key_in_query_string"
    assert _handshake(ws_url(live, f"/ws/v1/chat?{param}={world.red_key}")) == 403


def test_daphnes_access_log_keeps_no_query_string(live, world):
    for path in ("/v1/models", "/health", "/dashboard/"):
        httpx.get(live.url + path, params={"x-api-key": SECRET, "other": "x"})
    assert _handshake(ws_url(live, f"/ws/v1/chat?token={SECRET}")) == 403
    log = live.log_text()
    assert SECRET not in log
    assert '"GET /v1/models?[REDACTED]" 400' in log and '"GET /health?[REDACTED]" 400' in log


@pytest.mark.slow
def test_uvicorns_access_log_keeps_no_query_string(test_database_url, transactional_db, world):
    """`uvicorn config.asgi:application` logs every request (config.serve turns that off)."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off"],
        cwd=ROOT, env=server_env(test_database_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, "uvicorn did not start"
                time.sleep(0.2)
        refused = httpx.get(url + "/v1/models", params={"api_key": SECRET},
                            headers={"Authorization": f"Bearer {world.red_key}"})
        assert refused.status_code == 400
        httpx.get(url + "/costs", params={"token": SECRET, "format": "csv"})
    finally:
        stop_process(process)
    log = process.stdout.read()
    assert SECRET not in log
    assert '"GET /v1/models?[REDACTED] HTTP/1.1" 400' in log, log[-2000:]
