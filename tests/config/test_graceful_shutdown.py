"""SIGTERM to the production server (config/serve.py, config/draining.py):
it stops accepting at once, lets in-flight requests, SSE streams and websocket
chats finish within the grace period, and every one of them leaves its Usage
row; what outlives the grace is cut, and still leaves its row."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from budgets.models import Budget, Reservation, Usage
from providers.models import Model
from tests.fault_support import wait_until
from tests.platform_support import refuses_connections, start_serve

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHAT = {"model": "architect", "messages": [{"role": "user", "content": "hi"}]}


def slow_demo(world, **options) -> None:
    """The demo provider slowed down, priced, and a hard budget on red: each
    request holds a reservation from admission to its settlement, which the
    test watches to know what is in flight."""
    world.demo.options = options
    world.demo.save()
    Model.objects.filter(provider=world.demo, name="demo").update(input_price=0, output_price=1)
    Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal(100), thresholds=[])


def in_flight(count: int) -> None:
    wait_until(lambda: Reservation.objects.count() == count, 20, f"{count} request(s) admitted")


class Stream(threading.Thread):
    """An SSE chat read to its end; `started` once its first chunk arrived."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.started = threading.Event()
        self.lines: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=60,
                              headers={"Authorization": f"Bearer {self.key}"}) as reply:
                for line in reply.iter_lines():
                    if line.startswith("data:"):
                        self.lines.append(line)
                        self.started.set()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error
            self.started.set()


class WebsocketChat(threading.Thread):
    """One chat on /ws/v1/chat; records its frames and how the socket closed."""

    def __init__(self, port: int, key: str) -> None:
        super().__init__(daemon=True)
        self.port, self.key = port, key
        self.started = threading.Event()
        self.frames: list[dict] = []
        self.close_code: int | None = None

    def run(self) -> None:
        with connect(f"ws://127.0.0.1:{self.port}/ws/v1/chat", open_timeout=10,
                     additional_headers={"Authorization": f"Bearer {self.key}"}) as ws:
            ws.send(json.dumps({"type": "chat", "id": "c1", "persona": "architect",
                                "messages": [{"role": "user", "content": "hi"}]}))
            try:
                while True:
                    self.frames.append(json.loads(ws.recv(timeout=30)))
                    self.started.set()
            except ConnectionClosed as closed:
                self.close_code = closed.rcvd.code if closed.rcvd else None
            finally:
                self.started.set()


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "supervised-workers"])
def test_sigterm_lets_requests_streams_and_websocket_chats_finish_and_record(test_database_url, world, workers):
    slow_demo(world, latency_ms=1500, chunk_delay_ms=250)  # each stream: ~3.5 s after a 1.5 s first token
    server = start_serve(test_database_url, name="graceful", grace=20, workers=workers)
    before = Usage.objects.filter(team=world.red).count()
    try:
        stream, chat = Stream(server.url, world.red_key), WebsocketChat(server.port, world.red_key)
        stream.start()
        chat.start()
        assert stream.started.wait(20) and chat.started.wait(20), "the streams never began"
        answers = []
        plain = threading.Thread(target=lambda: answers.append(httpx.post(
            server.url + "/v1/chat/completions", json=CHAT, timeout=60,
            headers={"Authorization": f"Bearer {world.red_key}"})))
        plain.start()
        in_flight(3)  # the plain request too: admitted, waiting for the provider
        stopped_at = time.monotonic()
        server.terminate()

        deadline = time.monotonic() + 5
        while not refuses_connections(server.port):
            assert time.monotonic() < deadline, "still accepting after SIGTERM"
            time.sleep(0.05)
        assert stream.is_alive() and chat.is_alive(), "the streams ended before the server stopped listening"

        for thread in (stream, chat, plain):
            thread.join(timeout=30)
        assert server.process.wait(timeout=30) == 0
        assert time.monotonic() - stopped_at < 15  # it exits when the work is done, not at the grace's end (20 s)
    finally:
        server.stop()

    assert stream.error is None and stream.lines[-1] == "data: [DONE]", (stream.error, stream.lines[-3:])
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["choices"][0]["message"]["content"]
    assert chat.frames[-1]["type"] == "done", chat.frames[-2:]
    assert chat.close_code == 1012  # "service restart": the client reconnects elsewhere
    rows = list(Usage.objects.filter(team=world.red).order_by("id").values_list("endpoint", "status"))[before:]
    assert sorted(status for _, status in rows) == ["ok", "ok", "ok"], rows
    assert not Reservation.objects.exists()  # each settled before the process exited
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]


def test_a_stream_longer_than_the_grace_is_cut_and_still_recorded(test_database_url, world):
    slow_demo(world, latency_ms=0, chunk_delay_ms=1000)  # ~15 s of chunks
    server = start_serve(test_database_url, name="graceful-cut", grace=1)
    before = Usage.objects.filter(team=world.red).count()
    try:
        stream = Stream(server.url, world.red_key)
        stream.start()
        assert stream.started.wait(20)
        in_flight(1)
        stopped_at = time.monotonic()
        server.terminate()
        assert server.process.wait(timeout=20) == 0
        assert time.monotonic() - stopped_at < 8  # the grace (1 s) and the last steps, not the stream's 15 s
        stream.join(timeout=10)
    finally:
        server.stop()
    assert "data: [DONE]" not in stream.lines
    rows = list(Usage.objects.filter(team=world.red).order_by("id").values_list("status", "stream"))[before:]
    assert rows == [("cancelled", True)]  # cut as if its client had left, and recorded
    assert not Reservation.objects.exists()
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
