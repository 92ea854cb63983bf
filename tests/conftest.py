"""The shared fixture world and a live gateway.

- Two teams, red and blue, each with a chat key; an admin key; a key with the
  `direct` scope.
- `gateway_server`: a real daphne process serving config.asgi against the
  test database, started once per session. Tests that talk to it use
  `transactional_db` so what they create is committed and visible to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def _database_url_for(settings_dict: dict) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveGateway:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "DEBUG",  # the canary tests read every line at every level
        # Alerts: mail to files the tests read; webhooks retried quickly.
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(ARTIFACTS / "mail"),
        "EP_WEBHOOK_RETRY_SECONDS": "0.5",
        # The server outlives tests, and many of them make the demo provider
        # fail on purpose: by default a breaker must not open on that. Breaker
        # tests set their own volume (provider option breaker_min_calls).
        "EP_BREAKER_MIN_CALLS": "1000",
        "EP_SWEEP_SECONDS": "0.25",
        "EP_ALLOW_PRIVATE_PROVIDER_URLS": "1",  # the fake providers listen on 127.0.0.1
    }
    # Tests change config from another process: check the shared generation
    # (Redis, or the database) on every request.
    env["EP_CONFIG_CHECK_SECONDS"] = "0"
    env.update(extra)
    return env


def start_daphne(database_url: str, name: str = "gateway", **extra_env: str) -> LiveGateway:
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log_path = ARTIFACTS / f"{name}-{port}.log"
    process = subprocess.Popen(
        # make run's server (daphne, its access log scrubbed: config/devserver.py)
        [sys.executable, "-m", "config.devserver", "-b", "127.0.0.1", "-p", str(port), "-v", "1",
         "config.asgi:application"],
        cwd=ROOT,
        env=server_env(database_url, **extra_env),
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code in (200, 503):
                return LiveGateway(url, process, log_path)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"daphne did not serve /health in 30 s:\n{log_path.read_text()}")


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session", autouse=True)
def _fresh_redis_windows():
    """Redis outlives test databases, whose ids restart each session: drop the
    rate-limit windows a previous session left for the same key ids."""
    if settings.REDIS_URL:
        from budgets import shared_state as shared

        client = shared.sync_redis()
        for key in client.scan_iter("ep:rl:*"):
            client.delete(key)
    yield


@pytest.fixture(scope="session", autouse=True)
def _test_database_released_at_the_end(django_db_setup, django_db_blocker):
    """In-process tests leave connections open on other threads (the ledger's
    writer, sync_to_async workers); on PostgreSQL they kept pytest-django from
    dropping the test database ("being accessed by other users"). Torn down
    before django_db_setup, this ends them first."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    from django.db import connection

    return _database_url_for(connection.settings_dict)


@pytest.fixture(scope="session")
def gateway_server(test_database_url):
    server = start_daphne(test_database_url)
    yield server
    stop_process(server.process)


@pytest.fixture
def live(gateway_server, transactional_db) -> LiveGateway:
    """The live gateway, with this test's data committed for it to see."""
    return gateway_server


@pytest.fixture(scope="session")
def dev_server(test_database_url):
    """A second live gateway as `make run` starts it: DEBUG on (so plain-text
    logs) and ALLOWED_HOSTS unset (in DEBUG: any host). Tests that use it also
    take `transactional_db`."""
    server = start_daphne(test_database_url, name="dev", DEBUG="1", ALLOWED_HOSTS="*", LOG_FORMAT="plain")
    yield server
    stop_process(server.process)


# -- a wire-level OpenAI fake -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fake():
    """An OpenAI fake provider (tests/fakes/openai_server.py) for the module;
    modules that need another provider's fake define their own `fake`."""
    from tests.fakes.openai_server import FakeOpenAIServer

    server = FakeOpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture
def via_fake(fake, world):
    """The `via-openai` persona routed to the fake (tests/streaming_support.py)."""
    from tests.streaming_support import route_persona_to_fake

    fake.reset()
    route_persona_to_fake(fake)
    return fake


# -- the fixture world ---------------------------------------------------------------------


@dataclass
class World:
    red: object
    blue: object
    red_key: str
    blue_key: str
    admin_key: str
    direct_key: str
    demo: object


@pytest.fixture
def world(db) -> World:
    from accounts.models import ApiKey, Team
    from personas.services import demo_personas_ensure
    from providers.services import demo_provider_ensure

    demo = demo_provider_ensure()
    demo.options = {"latency_ms": 0, "chunk_delay_ms": 0}
    demo.save()
    demo_personas_ensure(demo)
    red, blue = Team.objects.create(name="red"), Team.objects.create(name="blue")
    _, red_key = ApiKey.issue(team=red, name="red agents")
    _, blue_key = ApiKey.issue(team=blue, name="blue agents")
    _, admin_key = ApiKey.issue(team=red, name="red admin", scopes=["admin"])
    _, direct_key = ApiKey.issue(team=red, name="red direct", scopes=["chat", "direct"])
    return World(red, blue, red_key, blue_key, admin_key, direct_key, demo)


@pytest.fixture(autouse=True)
def _fresh_breakers():
    """Circuit breakers are keyed by provider name, which tests reuse: each
    test starts with every breaker closed (in Redis and in this process)."""
    from budgets import shared_state as shared
    from gateway.resilience import Breaker

    Breaker._local.clear()
    Breaker._clean_until.clear()
    Breaker._unsent.clear()
    if settings.REDIS_URL:
        client = shared.sync_redis()
        for key in client.scan_iter("ep:breaker:*"):
            client.delete(key)
    yield


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def _adapters_closed_at_the_end():
    """The adapter registry keeps one client per configuration for the whole
    session; close them on the loop that opened them (aiohttp warns otherwise)."""
    yield
    from providers import adapters

    for adapter in list(adapters._instances.values()):
        await adapter.aclose()
    adapters._instances.clear()
