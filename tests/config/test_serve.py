"""The production server (`python -m config.serve`): each worker listens on its
own SO_REUSEPORT socket, so the kernel spreads keep-alive connections across
workers; a worker that dies is replaced; SIGTERM stops them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS, ROOT, _free_port, server_env

pytestmark = pytest.mark.django_db(transaction=True)


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:port, from /proc/net/tcp."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if local == f"0100007F:{port:04X}" and state == "0A":  # 0A = LISTEN
            inodes.add(inode)
    return inodes


def owners(inodes: set[str]) -> set[int]:
    """PIDs holding any of these socket inodes."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.add(int(proc.name))
    return pids


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def serve(database_url: str, workers: int):
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log = (ARTIFACTS / f"serve-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT, env=server_env(database_url), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: len(listening_inodes(port)) == workers and healthy(url))
        yield process, port, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


@pytest.fixture
def served(test_database_url, world):
    yield from serve(test_database_url, workers=2)


@pytest.fixture
def served_alone(test_database_url, world):
    """One worker: its /metrics counts everything the test sent."""
    yield from serve(test_database_url, workers=1)


def test_each_worker_listens_on_its_own_socket_and_serves_chat(served, world):
    process, port, url = served
    inodes = listening_inodes(port)
    assert len(inodes) == 2
    workers = owners(inodes)
    assert len(workers) == 2 and process.pid not in workers  # the parent only supervises

    # Many separate keep-alive clients: every one is answered, and the ledger
    # has one row per request whichever worker served it.
    from budgets.models import Usage

    before = Usage.objects.count()
    clients = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {world.red_key}"}) for _ in range(12)]
    try:
        for client in clients:
            reply = client.post("/v1/chat/completions",
                                json={"model": "architect", "messages": [{"role": "user", "content": "hi"}]})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"]
    finally:
        for client in clients:
            client.close()
    assert Usage.objects.count() == before + 12


def test_websockets_work_under_the_production_server(served, world):
    from websockets.sync.client import connect

    _, port, _ = served
    with connect(f"ws://127.0.0.1:{port}/ws/v1/chat", additional_headers={"Authorization": f"Bearer {world.red_key}"},
                 open_timeout=10) as ws:
        ws.send(json.dumps({"type": "chat", "id": "c1", "persona": "architect",
                            "messages": [{"role": "user", "content": "hi"}]}))
        frames = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.recv(timeout=10)))
    assert frames[-1]["type"] == "done", frames[-1]
    assert any(f["type"] == "delta" and f["id"] == "c1" for f in frames)


def test_a_dead_worker_is_replaced_and_sigterm_stops_everything(served):
    process, port, url = served
    first = owners(listening_inodes(port))
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    def two_workers_without_victim() -> set[int] | None:
        now = owners(listening_inodes(port))
        return now if len(now) == 2 and victim not in now else None

    replaced = wait_for(two_workers_without_victim)
    assert replaced - first  # a new process took the dead one's place
    assert healthy(url)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    wait_for(lambda: not listening_inodes(port))
    for pid in replaced:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_second_server_on_the_same_port_refuses_to_start(served, test_database_url):
    # SO_REUSEPORT would otherwise let it bind and silently take half the connections.
    _, port, url = served
    second = subprocess.run(
        [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=server_env(test_database_url), capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr
    assert len(listening_inodes(port)) == 2 and healthy(url)


def _samples(url: str, admin_key: str, name: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    scrape = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)
    assert scrape.status_code == 200, scrape.text
    return {sample.labels["generation"]: sample.value
            for family in text_string_to_metric_families(scrape.text) for sample in family.samples
            if sample.name == name}


def test_requests_leave_no_reference_cycles_and_every_collection_is_counted(served_alone, world):
    """Answers, streams and clients that leave mid-stream are freed by reference
    counting alone: the garbage collector finds (almost) nothing of theirs. Each
    used to leave a cycle of ~70 objects (the request's tasks held in the ASGI
    handler's frame, that frame in their exception's traceback), which under
    thousands of open streams reached the old generation and only full
    collections, stopping the worker for hundreds of ms, freed."""
    _, _, url = served_alone
    auth = {"Authorization": f"Bearer {world.red_key}"}
    body = {"model": "architect", "messages": [{"role": "user", "content": "hi"}]}
    freed_before = sum(_samples(url, world.admin_key, "ep_gc_collected_objects_total").values())
    requests = 0
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        for _ in range(100):
            assert client.post("/v1/chat/completions", json=body).status_code == 200
            requests += 1
        for _ in range(30):
            with client.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as reply:
                assert reply.status_code == 200
                assert b"[DONE]" in reply.read()
            requests += 1
    for _ in range(30):  # each on its own connection, closed after the first chunk
        with httpx.Client(base_url=url, headers=auth, timeout=30) as client, \
                client.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as reply:
            assert reply.status_code == 200
            next(reply.iter_raw())
        requests += 1

    pauses = _samples(url, world.admin_key, "ep_gc_pause_seconds_count")
    assert pauses["0"] > 0  # young collections ran, and were counted
    freed = sum(_samples(url, world.admin_key, "ep_gc_collected_objects_total").values()) - freed_before
    assert freed < 5 * requests, f"{freed:.0f} objects in reference cycles for {requests} requests"
