"""ep_client, Hive's Python client (the package in clients/python/), against a
live daphne gateway: sync, async, streaming, tools, run tagging, overrides,
retries and typed errors, checked against the ledger; gateway.client still
re-exporting it; the package installed in a fresh virtualenv passing its own
tests against the live gateway; and the seed's "After" snippet, run verbatim
against a gateway on localhost:8000."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import httpx
import pytest
from ep_client import (
    APIConnectionError,
    AsyncExecutionPlatformClient,
    AuthenticationError,
    BudgetExceededError,
    ExecutionPlatformClient,
    ExecutionPlatformError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UpstreamError,
    error_from_body,
    new_run_id,
)

from budgets.models import Usage
from tests.conftest import ARTIFACTS, ROOT, server_env, stop_process

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def client(live, key: str, **options) -> ExecutionPlatformClient:
    return ExecutionPlatformClient(base_url=live.url, api_key=key, **options)


def ledger(count: int = 1) -> list[Usage]:
    """The Usage rows, oldest first, once there are `count`: a stream's row is
    written just after its last chunk is sent, so it can trail the client."""
    deadline = time.monotonic() + 5
    rows = list(Usage.objects.order_by("created_at", "id"))
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.02)
        rows = list(Usage.objects.order_by("created_at", "id"))
    return rows


def set_demo(world, **options) -> None:
    world.demo.options = {"latency_ms": 0, "chunk_delay_ms": 0, **options}
    world.demo.save()


# -- chat ------------------------------------------------------------------------------------


def test_chat_returns_the_answer_with_who_served_it_and_what_it_cost(live, world):
    with client(live, world.red_key, persona="architect") as ep:
        response = ep.chat("Design a system")
    row = Usage.objects.get()
    assert str(response) == response.text and response.text.startswith("[demo]")
    assert "Design a system" in response.text
    assert (response.provider, response.model, response.persona) == ("demo", "demo", "architect")
    assert response.finish_reason == "stop" and response.tool_calls == []
    assert response.request_id == row.request_id
    assert response.cost_usd == row.cost_usd and response.cost_usd > 0
    assert (response.usage.input_tokens, response.usage.output_tokens) == (row.input_tokens, row.output_tokens)
    assert (row.persona, row.team, row.status) == ("architect", world.red, "ok")


def test_the_key_comes_from_EP_API_KEY_when_not_passed(live, world, monkeypatch):
    monkeypatch.setenv("EP_API_KEY", world.blue_key)
    assert ExecutionPlatformClient(base_url=live.url, persona="reviewer").chat("hi").text
    assert Usage.objects.get().team == world.blue
    monkeypatch.delenv("EP_API_KEY")
    with pytest.raises(AuthenticationError) as caught:
        ExecutionPlatformClient(base_url=live.url, persona="reviewer")
    assert caught.value.code == "missing_api_key"


def test_a_call_can_name_another_persona_and_openai_parameters(live, world):
    with client(live, world.red_key, persona="architect") as ep:
        ep.chat([{"role": "user", "content": "Review this"}], persona="reviewer", max_tokens=50, temperature=0.2)
    assert Usage.objects.get().persona == "reviewer"


def test_chat_refuses_stream_true_and_points_to_stream(live, world):
    with client(live, world.red_key, persona="architect") as ep, pytest.raises(ValueError, match="stream()"):
        ep.chat("hi", stream=True)


def test_run_id_and_step_tag_each_request(live, world):
    run_id = new_run_id()
    with client(live, world.red_key, persona="architect", run_id=run_id) as ep:
        ep.chat("Design", step="design")
        ep.chat("Build", persona="developer", step=2)
        ep.chat("Elsewhere", run_id="run_other", step="x")
    rows = Usage.objects.order_by("created_at", "id").values_list("run_id", "step", "persona")
    assert list(rows) == [(run_id, "design", "architect"), (run_id, "2", "developer"), ("run_other", "x", "architect")]


def test_a_provider_override_calls_the_provider_directly(live, world):
    with client(live, world.direct_key, provider="demo", model="demo") as ep:
        assert ep.chat("hi").provider == "demo"
    # The seed's create_agent(persona, provider) passes only a provider: its model is looked up.
    with client(live, world.direct_key, persona="architect", provider_override="demo") as ep:
        response = ep.chat("hi")
    assert (response.provider, response.model) == ("demo", "demo")
    assert list(Usage.objects.filter(endpoint="v1.chat.completions").values_list("model", "persona")) == [
        ("demo", ""), ("demo", "")]  # a direct call is not a persona's
    with client(live, world.red_key, provider="demo", model="demo") as ep, pytest.raises(PermissionDeniedError):
        ep.chat("hi")


# -- tools -----------------------------------------------------------------------------------


def test_tool_calls_round_trip(live, world):
    with client(live, world.red_key, persona="architect") as ep:
        first = ep.chat("Weather in Paris?", tools=[WEATHER])
        assert first.finish_reason == "tool_calls" and first.text == ""
        call = first.tool_calls[0]
        assert call.name == "get_weather" and call.parsed_arguments() == {"city": "demo"}
        messages = [{"role": "user", "content": "Weather in Paris?"}, first.message,
                    {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        second = ep.chat(messages, tools=[WEATHER["function"]])  # the bare form is accepted too
    assert "sunny" in second.text and second.finish_reason == "stop"


def test_a_stream_delivers_tool_call_pieces(live, world):
    with client(live, world.red_key, persona="developer") as ep:
        events = list(ep.stream("Weather?", tools=[WEATHER]))
    calls = [e for e in events if e.type == "tool_call"]
    assert calls[0].tool_call_id.startswith("call_") and calls[0].name == "get_weather"
    assert "".join(e.arguments for e in calls if e.index == 0) == '{"city": "demo"}'
    assert events[-1].type == "done" and events[-1].finish_reason == "tool_calls"


# -- streaming ------------------------------------------------------------------------------


def test_a_stream_yields_deltas_usage_and_done(live, world):
    with client(live, world.red_key, persona="developer", run_id="run_stream") as ep:
        events = list(ep.stream("Write code", step="build"))
    kinds = [e.type for e in events]
    assert kinds.count("delta") > 1 and kinds[-2:] == ["usage", "done"]
    text = "".join(e.text for e in events if e.type == "delta")
    assert text.startswith("[demo]") and "Write code" in text
    done, [row] = events[-1], ledger()
    assert (done.finish_reason, done.provider, done.request_id) == ("stop", "demo", row.request_id)
    assert done.usage.output_tokens == row.output_tokens > 0
    assert (row.stream, row.status, row.run_id, row.step) == (True, "ok", "run_stream", "build")


def test_an_error_inside_a_stream_raises_after_the_first_deltas(live, world):
    set_demo(world, cut_after_chunks=2)
    received = []
    with client(live, world.red_key, persona="developer") as ep, pytest.raises(UpstreamError) as caught:
        received.extend(ep.stream("Write code"))  # keeps what arrived before the raise
    assert [e.type for e in received] == ["delta", "delta"]
    assert caught.value.code == "provider_unavailable" and caught.value.request_id == ledger()[0].request_id


# -- async ----------------------------------------------------------------------------------
# Each test drives the async client in its own event loop (asyncio.run) and
# reads the ledger afterwards, from the test's thread: no database connection
# is left open in an executor thread.


async def _async_chat_and_stream(live, world) -> tuple:
    async with AsyncExecutionPlatformClient(live.url, "reviewer", api_key=world.red_key, run_id="run_async") as ep:
        answer = await ep.chat("Review this", step="1")
        events = [event async for event in ep.stream("Review that", step="2")]
        with pytest.raises(NotFoundError):
            await ep.chat("hi", persona="astronaut")
    return answer, events


def test_the_async_client_chats_and_streams(live, world):
    answer, events = asyncio.run(_async_chat_and_stream(live, world))
    rows = ledger(3)
    assert answer.text.startswith("[demo]") and answer.cost_usd == rows[0].cost_usd
    assert "".join(e.text for e in events if e.type == "delta").startswith("[demo]")
    assert events[-1].type == "done" and events[-1].request_id == rows[1].request_id
    assert [(r.step, r.status, r.run_id) for r in rows] == [("1", "ok", "run_async"), ("2", "ok", "run_async"),
                                                          ("", "refused", "run_async")]


async def _async_stream_tools(live, world) -> list:
    async with AsyncExecutionPlatformClient(live.url, "architect", api_key=world.red_key) as ep:
        return [event async for event in ep.stream("Weather?", tools=[WEATHER])]


def test_the_async_client_streams_tool_calls(live, world):
    events = asyncio.run(_async_stream_tools(live, world))
    assert [e.name for e in events if e.type == "tool_call" and e.name] == ["get_weather"]
    assert events[-1].finish_reason == "tool_calls"


# -- errors ---------------------------------------------------------------------------------


def _bad_key(live, world):
    client(live, "ep-not-a-real-key", persona="architect").chat("hi")


def _unknown_persona(live, world):
    client(live, world.red_key, persona="astronaut").chat("hi")


def _direct_without_scope(live, world):
    client(live, world.red_key).chat("hi", provider="demo", model="demo")


def _bad_parameter(live, world):
    client(live, world.red_key, persona="architect").chat("hi", temperature=9)


def _provider_rate_limited(live, world):
    set_demo(world, fail_with="rate_limited", retry_after=2)
    client(live, world.red_key, persona="architect").chat("hi")


def _provider_down(live, world):
    set_demo(world, fail_with="unavailable")
    client(live, world.red_key, persona="architect").chat("hi")


def _provider_down_before_a_stream(live, world):
    set_demo(world, fail_with="unavailable")
    list(client(live, world.red_key, persona="architect").stream("hi"))


def _over_budget(live, world):
    from decimal import Decimal

    from budgets.models import Budget

    Budget.objects.create(name="red tiny", scope="team", team=world.red, limit_usd=Decimal("0.000001"), hard=True)
    client(live, world.red_key, persona="architect").chat("hi")


ERRORS = {
    "over budget": (_over_budget, BudgetExceededError, 429, "budget_exceeded"),
    "bad key": (_bad_key, AuthenticationError, 401, "invalid_api_key"),
    "unknown persona": (_unknown_persona, NotFoundError, 404, "model_not_found"),
    "direct without scope": (_direct_without_scope, PermissionDeniedError, 403, "direct_model_not_allowed"),
    "bad parameter": (_bad_parameter, InvalidRequestError, 400, "invalid_request"),
    "provider rate limited": (_provider_rate_limited, RateLimitError, 429, "provider_rate_limited"),
    "provider down": (_provider_down, UpstreamError, 502, "provider_unavailable"),
    "provider down before a stream": (_provider_down_before_a_stream, UpstreamError, 502, "provider_unavailable"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_raise_the_typed_exception_of_their_code(live, world, case):
    call, error_class, status, code = ERRORS[case]
    with pytest.raises(error_class) as caught:
        call(live, world)
    error = caught.value
    assert isinstance(error, ExecutionPlatformError)
    assert (error.status, error.code) == (status, code)
    assert error.message and error.request_id.startswith("req_")
    if status != 401:  # a wrong key has nobody to bill
        assert error.request_id == Usage.objects.get().request_id
    if error_class is RateLimitError:
        assert error.retry_after == 2.0


def test_unknown_persona_errors_name_the_known_ones(live, world):
    with pytest.raises(NotFoundError) as caught:
        _unknown_persona(live, world)
    assert "astronaut" in caught.value.message and "architect" in caught.value.message


def test_budget_exceeded_is_its_own_error_not_a_rate_limit():
    envelope = {"error": {"type": "rate_limit_error", "code": "budget_exceeded", "message": "Budget 'red' is spent",
                          "request_id": "req_1"}}
    error = error_from_body(429, envelope, {"Retry-After": "60"})
    assert isinstance(error, BudgetExceededError) and not isinstance(error, RateLimitError)
    assert (error.status, error.code, error.request_id) == (429, "budget_exceeded", "req_1")


# -- retries --------------------------------------------------------------------------------


class FlakyTransport(httpx.HTTPTransport):
    """A real transport whose first `failures` connections are refused."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures, self.sends = failures, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sends += 1
        if self.sends <= self.failures:
            raise httpx.ConnectError("connection refused")
        return super().handle_request(request)


def test_connection_errors_are_retried_with_backoff(live, world):
    transport = FlakyTransport(failures=2)
    ep = client(live, world.red_key, persona="architect", transport=transport, backoff=0.01)
    assert ep.chat("hi").text.startswith("[demo]")
    assert transport.sends == 3 and Usage.objects.count() == 1


def test_http_errors_are_not_retried(live, world):
    transport = FlakyTransport(failures=0)
    with pytest.raises(NotFoundError):
        client(live, world.red_key, persona="astronaut", transport=transport, backoff=0.01).chat("hi")
    assert transport.sends == 1


def test_an_unreachable_platform_is_a_connection_error_after_the_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    transport = FlakyTransport(failures=0)
    ep = ExecutionPlatformClient(f"http://127.0.0.1:{port}", "architect", api_key="ep-x", transport=transport,
                                 max_retries=2, backoff=0.01)
    with pytest.raises(APIConnectionError) as caught:
        ep.chat("hi")
    assert transport.sends == 3 and caught.value.code == "connection_error"


# -- the package -------------------------------------------------------------------------------

SERVER_PACKAGES = ("django", "ninja", "channels", "accounts", "providers", "personas", "budgets", "gateway", "api",
                   "dashboard", "config")
# Every public name gateway/client.py had before the client moved to clients/python/.
OLD_PUBLIC_NAMES = (
    "APIConnectionError", "AsyncExecutionPlatformClient", "AuthenticationError", "BudgetExceededError", "CALL_OPTIONS",
    "ChatResponse", "DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "ExecutionPlatformClient", "ExecutionPlatformError",
    "InvalidRequestError", "NotFoundError", "PermissionDeniedError", "RETRYABLE", "RateLimitError", "StreamEvent",
    "StreamParser", "ToolCall", "UpstreamError", "Usage", "error_from_body", "new_run_id", "response_from",
)
OLD_STAR_NAMES = {
    "APIConnectionError", "AsyncExecutionPlatformClient", "AuthenticationError", "BudgetExceededError",
    "ChatResponse", "ExecutionPlatformClient", "ExecutionPlatformError", "InvalidRequestError", "NotFoundError",
    "PermissionDeniedError", "RateLimitError", "StreamEvent", "ToolCall", "UpstreamError", "Usage", "new_run_id",
}


def _imported_server_packages(python: str | Path, module: str, cwd: Path) -> list[str]:
    probe = (f"import json, sys, {module}; "
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))))")
    out = subprocess.run([str(python), "-c", probe, *SERVER_PACKAGES], cwd=cwd, capture_output=True, text=True,
                         check=True, env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"})
    return json.loads(out.stdout)


def test_the_client_imports_without_django():
    assert _imported_server_packages(sys.executable, "ep_client", ROOT) == []
    assert _imported_server_packages(sys.executable, "gateway.client", ROOT) == ["gateway"]  # the re-export too


def test_gateway_client_still_re_exports_the_client_for_one_release():
    import ep_client.client

    import gateway.client

    for name in OLD_PUBLIC_NAMES:
        assert getattr(gateway.client, name) is getattr(ep_client.client, name), name
    namespace: dict = {}
    exec("from gateway.client import *", namespace)  # what the seed's execution_platform shim does
    assert set(namespace) - {"__builtins__"} == OLD_STAR_NAMES
    assert "ep_client" in gateway.client.__doc__ and "Deprecated" in gateway.client.__doc__


# The package's own tests (clients/python/tests) that must run, not be skipped:
# at least this many in all, and this many of the live ones (42 and 18 today).
CLIENT = ROOT / "clients" / "python"
MIN_CLIENT_TESTS, MIN_LIVE_CLIENT_TESTS = 40, 18


def _fresh_virtualenv(where: Path) -> Path:
    """A new virtualenv with the client package (from clients/python, as a user installs it) and pytest."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, capture_output=True, timeout=120)
    python = where / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           str(CLIENT), "pytest"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    return python


@pytest.mark.slow
def test_the_client_package_installs_in_a_fresh_virtualenv_and_passes_its_own_tests(live, world, tmp_path):
    from accounts.models import ApiKey

    _, key = ApiKey.issue(team=world.red, name="client package tests")
    venv = tmp_path / "venv"
    python = _fresh_virtualenv(venv)

    # Installed into the venv (not read from the checkout), and nothing of the server comes with it.
    where = subprocess.run([str(python), "-c", "import ep_client, importlib.util; print(ep_client.__file__); "
                            "print(importlib.util.find_spec('django'))"], cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == "None"
    assert _imported_server_packages(python, "ep_client", tmp_path) == []

    report = tmp_path / "client-tests.xml"
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE", "EP_TEST_PERSONAS")}
    env |= {"EP_BASE_URL": live.url, "EP_API_KEY": key, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([str(python), "-m", "pytest", "clients/python/tests", "-p", "no:cacheprovider",
                           f"--junitxml={report}", "-q"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, f"the client's own tests failed:\n{done.stdout[-8000:]}\n{done.stderr[-2000:]}"

    cases = list(ElementTree.parse(report).iter("testcase"))
    not_passed = [(c.get("name"), [child.tag for child in c]) for c in cases
                  if c.find("skipped") is not None or c.find("failure") is not None or c.find("error") is not None]
    assert not_passed == []  # none skipped: the live ones saw EP_BASE_URL and EP_API_KEY
    assert len(cases) >= MIN_CLIENT_TESTS
    assert sum("test_live" in c.get("classname", "") for c in cases) >= MIN_LIVE_CLIENT_TESTS
    assert Usage.objects.filter(api_key__name="client package tests", status="ok").count() >= 10  # this server


# -- the seed's snippet, verbatim --------------------------------------------------------------

# From the seed's STATUS_AND_NEXT_STEPS.md, "Code Changes Required", After.
SEED_AFTER = '''\
# personas.py
from execution_platform.client import ExecutionPlatformClient

client = ExecutionPlatformClient(
    base_url="http://localhost:8000",
    persona="architect"  # Provider selected via config
)
response = client.chat("Design a system")
'''


@pytest.fixture
def gateway_on_port_8000(test_database_url, live):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            pytest.fail("Port 8000 is taken: the seed's snippet hard-codes http://localhost:8000, so this test "
                        "needs that port free. Stop whatever listens there and run it again.")
    log_path = ARTIFACTS / "gateway-8000.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "8000", "config.asgi:application"],
        cwd=ROOT, env=server_env(test_database_url), stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    try:
        _wait_for_health("http://127.0.0.1:8000", process, log_path)
        yield "http://localhost:8000"
    finally:
        stop_process(process)


def _wait_for_health(url: str, process: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne on port 8000 exited:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code in (200, 503):
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"daphne on port 8000 did not serve /health in 30 s:\n{log_path.read_text()}")


def test_the_seed_snippet_runs_verbatim(gateway_on_port_8000, world, tmp_path):
    # Hive keeps the seed's import line through a two-line shim package over
    # ep_client (docs/MIGRATING_HIVE.md, "What Hive installs"); the snippet itself is untouched.
    shim = tmp_path / "execution_platform"
    shim.mkdir()
    (shim / "__init__.py").write_text("")
    (shim / "client.py").write_text("from ep_client import *  # noqa: F401,F403\n")
    script = tmp_path / "personas.py"
    script.write_text(SEED_AFTER + "print(response)\nprint(type(response).__name__, response.cost_usd)\n")
    env = {**os.environ, "EP_API_KEY": world.red_key, "PYTHONPATH": str(tmp_path)}  # ep_client: installed
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    answer, summary = done.stdout.strip().rsplit("\n", 1)
    row = Usage.objects.get()
    assert answer.startswith("[demo]") and "Design a system" in answer
    assert summary == f"ChatResponse {row.cost_usd}"
    assert (row.persona, row.team, row.status) == ("architect", world.red, "ok")
    assert SEED_AFTER in (ROOT / "docs" / "MIGRATING_HIVE.md").read_text()

