"""A body over the limit is refused before it is read: the production server
(config.serve, uvicorn, which hands the body over as it arrives) stops reading
at the path's cap (config/asgi.py read_body_capped) and answers 413 with the
envelope and the request's one Usage row; it never buffers the rest to disk."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from budgets.models import Usage
from tests.config.test_serve import healthy, listening_inodes, wait_for
from tests.conftest import ARTIFACTS, ROOT, _free_port, server_env

pytestmark = pytest.mark.django_db(transaction=True)

MAX_BODY, MAX_FILE = 50_000, 200_000


@pytest.fixture
def served(test_database_url, world):
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log = (ARTIFACTS / f"body-limits-{port}.log").open("w")
    env = server_env(test_database_url, EP_MAX_BODY_BYTES=str(MAX_BODY), EP_BATCH_FILE_MAX_BYTES=str(MAX_FILE))
    process = subprocess.Popen([sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "1"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: len(listening_inodes(port)) == 1 and healthy(url))
        yield port, url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _refused_row() -> Usage:
    return wait_for(lambda: Usage.objects.filter(http_status=413).first())


def _response(sock: socket.socket) -> str:
    """The whole answer: its head and as many body bytes as its Content-Length says
    (they may come in separate segments)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_a_declared_gigabyte_is_refused_after_the_first_bytes(served, world):
    port, _ = served
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {world.red_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2**30}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head + b'{"model": "architect", "messages": [')  # and nothing more of the gigabyte
        answer = _response(sock)
    assert answer.startswith("HTTP/1.1 413"), answer[:300]
    assert '"code":"request_too_large"' in answer.replace(" ", "") and str(MAX_BODY) in answer
    assert time.monotonic() - started < 5  # answered without waiting for the body
    row = _refused_row()
    assert (row.status, row.error_code, row.team_id) == ("refused", "request_too_large", world.red.id)
    assert Usage.objects.count() == 1


def test_a_chunked_body_past_the_limit_is_refused_with_its_row(served, world):
    _, url = served

    def body():
        yield b'{"model": "architect", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 10_000  # 200 kB in all, four times the limit, without a Content-Length
        yield b'"}]}'

    response = httpx.post(url + "/v1/chat/completions", content=body(), timeout=10,
                          headers={"Authorization": f"Bearer {world.red_key}", "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert _refused_row().request_id == response.headers["x-request-id"]


def test_a_file_upload_has_the_file_limit_not_the_json_one(served, world):
    _, url = served
    headers = {"Authorization": f"Bearer {world.red_key}"}
    line = b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "architect", ' \
           b'"messages": [{"role": "user", "content": "hi"}]}}\n'
    fits = b"".join(line.replace(b"%d", str(i).encode()) for i in range(800))  # ~120 kB: over the JSON limit
    assert MAX_BODY < len(fits) < MAX_FILE
    accepted = httpx.post(url + "/v1/files", headers=headers, data={"purpose": "batch"},
                          files={"file": ("batch.jsonl", fits)}, timeout=10)
    assert accepted.status_code == 200, accepted.text
    too_big = fits * 2
    refused = httpx.post(url + "/v1/files", headers=headers, data={"purpose": "batch"},
                         files={"file": ("batch.jsonl", too_big)}, timeout=10)
    assert refused.status_code == 413 and "EP_BATCH_FILE_MAX_BYTES" in refused.json()["error"]["message"]
    assert sorted(Usage.objects.filter(team=world.red).values_list("http_status", flat=True)) == [200, 413]
