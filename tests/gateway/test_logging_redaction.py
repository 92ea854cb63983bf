"""Logs: one JSON object a line with the request id, and no key in any of them.

The canary test plants a provider credential and API keys, drives answers and
failures through a live gateway logging at DEBUG in JSON (the SDKs log their
requests at that level) with console tracing on, and reads every line."""

from __future__ import annotations

import json
import logging
import re
import sys

import httpx
import pytest

from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.conftest import start_daphne, stop_process
from tests.fakes.common import FakeReply, Fault

PROVIDER_CANARY = "sk-canary-logs-0123456789abcdefghij"
BAD_KEY_CANARY = "ep-canary-invalid-key-0123456789abcdef"
ACCESS_LOG = re.compile(r'^\S+ - - \[[^]]+\] "[A-Z]+ ')  # daphne's, printed without logging


@pytest.fixture(scope="module")
def json_gateway(test_database_url):
    server = start_daphne(test_database_url, name="canary", LOG_FORMAT="json", LOG_LEVEL="DEBUG",
                          EP_TRACING="console", EP_RETRY_BASE_SECONDS="0.01")
    yield server
    stop_process(server.process)


@pytest.fixture
def canary(fake, world, transactional_db):
    fake.reset()
    provider = Provider(name="openai", kind="openai", base_url=fake.base_url + "/v1", read_timeout=5)
    provider.set_credential(PROVIDER_CANARY)
    provider.save()
    Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    persona = Persona.objects.create(slug="via-openai")
    RouteStep.objects.create(persona=persona, provider=provider, model=fake.model)
    return fake


def _post(url: str, headers: dict[str, str], model: str = "via-openai", stream: bool = False) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers=headers, timeout=15, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})


def test_no_key_reaches_any_log_line_at_any_level(json_gateway, canary, world):
    bearer = {"Authorization": f"Bearer {world.red_key}"}
    canary.script(FakeReply(text="fine"), FakeReply(text="streamed fine"),
                  Fault("status", status=401, message="Incorrect API key provided"),
                  Fault("status", status=500, message="boom"), Fault("status", status=500, message="boom"),
                  Fault("status", status=429, retry_after=0, message="slow down"),
                  Fault("status", status=429, retry_after=0, message="slow down"))
    responses = {
        "ok": _post(json_gateway.url, bearer),
        "stream": _post(json_gateway.url, bearer, stream=True),
        "provider_401": _post(json_gateway.url, bearer),
        "provider_500": _post(json_gateway.url, bearer),
        "provider_429": _post(json_gateway.url, {"x-api-key": world.red_key}),
        "invalid_key": _post(json_gateway.url, {"Authorization": f"Bearer {BAD_KEY_CANARY}"}),
        "refused": _post(json_gateway.url, bearer, model="no-such-persona"),
    }
    assert {name: r.status_code for name, r in responses.items()} == {
        "ok": 200, "stream": 200, "provider_401": 502, "provider_500": 502, "provider_429": 429,
        "invalid_key": 401, "refused": 404}
    assert len(canary.requests) == 7  # the provider saw every call, retries included

    text = json_gateway.log_text()
    for secret in (PROVIDER_CANARY, world.red_key, BAD_KEY_CANARY, world.admin_key):
        assert secret not in text
    # Every line is JSON but daphne's access log, which it prints itself (not through logging).
    lines = [json.loads(line) for line in text.splitlines() if line.strip() and not ACCESS_LOG.match(line)]
    logged = [line for line in lines if "level" in line]
    assert {"DEBUG", "INFO", "WARNING"} <= {line["level"] for line in logged}
    assert any(line["logger"].startswith("openai") for line in logged)  # the SDK's DEBUG lines were read

    # What was logged while a request ran carries its request id.
    failing = responses["provider_500"].headers["X-Request-ID"]
    mine = [line for line in logged if line["request_id"] == failing]
    assert any("failed (unavailable)" in line["message"] for line in mine)
    assert any(line["logger"].startswith("openai") for line in mine)
    assert all(line["trace_id"] == responses["provider_500"].headers["X-Trace-Id"] for line in mine)

    # The console exporter wrote the request's span, one JSON object a line, in the same log.
    spans = [line for line in lines if "context" in line and "name" in line]
    ok_trace = "0x" + responses["ok"].headers["X-Trace-Id"]
    names = {span["name"] for span in spans if span["context"]["trace_id"] == ok_trace}
    assert names == {"chat via-openai", f"chat {canary.model}"}


# -- the filter and formatters, through the handler settings.LOGGING configured -------------


@pytest.fixture
def console_handler() -> logging.Handler:
    return next(h for h in logging.getLogger().handlers if h.get_name() == "console")


def _emit(handler: logging.Handler, msg: str, *args, exc_info=None, **extra) -> str:
    record = logging.getLogger("openai._base_client").makeRecord(
        "openai._base_client", logging.DEBUG, __file__, 1, msg, args, exc_info, extra=extra or None)
    assert handler.filter(record)
    return handler.format(record)


@pytest.mark.parametrize("msg, args", [
    ("Request options: %s", ({"headers": {"Authorization": f"Bearer {PROVIDER_CANARY}"}},)),
    ("headers=%r", ([(b"authorization", f"Bearer {PROVIDER_CANARY}".encode()), (b"host", b"x")],)),
    ("x-api-key: %s", ("sk-ant-api03-canary0123456789abcdef",)),
    ("GET /v1beta/models/gemini:generate?key=%s", ("AIzaSyCanary0123456789abcdefghijklmnop",)),
    ("calling with key %s", (BAD_KEY_CANARY,)),
    ("credential %s loaded", (PROVIDER_CANARY,)),
])
def test_the_console_handler_redacts_keys_in_messages_and_args(console_handler, msg, args):
    out = _emit(console_handler, msg, *args)
    assert "[REDACTED]" in out
    for secret in (PROVIDER_CANARY, "canary0123456789", "AIzaSyCanary", BAD_KEY_CANARY):
        assert secret not in out


def test_the_console_handler_redacts_tracebacks_and_extras(console_handler):
    try:
        raise RuntimeError(f"upstream said: invalid key {PROVIDER_CANARY}")
    except RuntimeError:
        out = _emit(console_handler, "failed", exc_info=sys.exc_info(), api_key=PROVIDER_CANARY)
    assert "RuntimeError" in out and PROVIDER_CANARY not in out


def test_json_lines_carry_the_request_id_and_plain_text_too():
    from gateway.observability import logs

    logs.bind_request("req_0123", "ab" * 16)
    try:
        record = logging.LogRecord("gateway.pipeline", logging.WARNING, __file__, 1, "provider %s failed",
                                   ("openai",), None)
        logs.RequestContextFilter().filter(record)
        entry = json.loads(logs.JsonFormatter().format(record))
        assert entry["request_id"] == "req_0123" and entry["trace_id"] == "ab" * 16
        assert entry["message"] == "provider openai failed" and entry["level"] == "WARNING"
        assert "[req_0123] provider openai failed" in logs.PlainFormatter().format(record)
    finally:
        logs.bind_request("", "")


def test_redaction_keeps_ordinary_text():
    from gateway.observability.logs import redact

    text = "step-by-step: SECRET_KEY is missing; provider openai failed (rate_limited), attempt 2"
    assert redact(text) == text
