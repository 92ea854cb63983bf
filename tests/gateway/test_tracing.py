"""OpenTelemetry spans, read from an in-memory exporter while real requests go
through the gateway in process (Django's AsyncClient, the real pipeline and
adapters, a wire-level fake provider): the request span, its attempt spans,
their GenAI attributes, the trace id in the Usage row and the response headers."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from budgets.models import Usage
from gateway.observability import tracing
from personas.models import Persona, RouteStep
from providers.models import Model, Provider
from tests.fakes.common import FakeReply, Fault


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.install(None)


@pytest.fixture
def routed(fake, world, transactional_db):
    """`via-openai`: the fake, then demo as its fallback."""
    fake.reset()
    provider = Provider(name="openai", kind="openai", base_url=fake.base_url + "/v1", read_timeout=5,
                        options={"max_attempts": 1})
    provider.set_credential("sk-test-tracing-0123456789")
    provider.save()
    Model.objects.create(provider=provider, name=fake.model, input_price=1, output_price=2)
    persona = Persona.objects.create(slug="via-openai")
    RouteStep.objects.create(persona=persona, provider=provider, model=fake.model, position=0)
    RouteStep.objects.create(persona=persona, provider=world.demo, model="demo", position=1)
    return fake


async def post(key: str, **body):
    body = {"model": "via-openai", "messages": [{"role": "user", "content": "hello"}]} | body
    return await AsyncClient().post("/v1/chat/completions", json.dumps(body), content_type="application/json",
                                    headers={"Authorization": f"Bearer {key}"})


def by_kind(exporter: InMemorySpanExporter):
    finished = exporter.get_finished_spans()
    servers = [s for s in finished if s.kind == SpanKind.SERVER]
    clients = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert len(servers) == 1, [s.name for s in finished]
    return servers[0], clients


async def row_of(response) -> Usage:
    return await sync_to_async(Usage.objects.get)(request_id=response["X-Request-ID"])


@pytest.mark.asyncio
async def test_a_request_span_holds_its_attempt_span_with_genai_attributes(spans, routed, world):
    routed.script(FakeReply(text="hi there", input_tokens=30, output_tokens=7))
    response = await post(world.red_key, max_tokens=50, temperature=0.3)
    assert response.status_code == 200
    request, attempts = by_kind(spans)
    assert len(attempts) == 1
    attempt = attempts[0]
    assert attempt.parent.span_id == request.context.span_id
    assert attempt.context.trace_id == request.context.trace_id
    assert request.name == "chat via-openai" and attempt.name == f"chat {routed.model}"

    row = await row_of(response)
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.system"] == "openai"
    assert request.attributes["gen_ai.request.model"] == "via-openai"
    assert request.attributes["gen_ai.response.model"] == routed.model
    assert request.attributes["gen_ai.request.max_tokens"] == 50
    assert request.attributes["gen_ai.request.temperature"] == 0.3
    assert request.attributes["gen_ai.usage.input_tokens"] == 30
    assert request.attributes["gen_ai.usage.output_tokens"] == 7
    assert request.attributes["ep.persona"] == "via-openai"
    assert request.attributes["ep.request_id"] == row.request_id
    assert request.attributes["ep.cost_usd"] == pytest.approx(float(row.cost_usd)) and row.cost_usd > 0
    assert "error.type" not in request.attributes

    assert attempt.attributes["gen_ai.system"] == "openai"
    assert attempt.attributes["gen_ai.request.model"] == routed.model
    assert attempt.attributes["gen_ai.response.model"] == routed.model
    assert attempt.attributes["gen_ai.usage.input_tokens"] == 30
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 7
    assert attempt.attributes["gen_ai.request.max_tokens"] == 50
    assert attempt.start_time >= request.start_time and attempt.end_time <= request.end_time

    trace_id = format(request.context.trace_id, "032x")
    assert row.trace_id == trace_id
    assert response["X-Trace-Id"] == trace_id
    flags = int(request.context.trace_flags)
    assert flags & 1 and response["traceparent"] == f"00-{trace_id}-{request.context.span_id:016x}-{flags:02x}"


@pytest.mark.asyncio
async def test_a_failed_attempt_and_its_fallback_are_two_attempt_spans(spans, routed, world):
    routed.script(Fault("status", status=500, message="boom"))
    response = await post(world.red_key)
    assert response.status_code == 200 and response["X-EP-Provider"] == "demo"
    request, attempts = by_kind(spans)
    failed, answered = sorted(attempts, key=lambda s: s.start_time)
    assert failed.attributes["gen_ai.system"] == "openai"
    assert failed.attributes["error.type"] == "unavailable"
    assert failed.status.status_code == StatusCode.ERROR
    assert answered.attributes["gen_ai.system"] == "demo"
    assert "error.type" not in answered.attributes
    assert answered.attributes["gen_ai.usage.output_tokens"] > 0
    assert {s.parent.span_id for s in attempts} == {request.context.span_id}
    assert request.attributes["ep.attempts"] == 2 and request.attributes["gen_ai.system"] == "demo"
    assert request.status.status_code == StatusCode.UNSET


@pytest.mark.asyncio
async def test_a_provider_failure_marks_the_request_span_with_its_error_type(spans, fake, world, transactional_db):
    fake.reset()
    provider = Provider(name="solo", kind="openai", base_url=fake.base_url + "/v1", read_timeout=5,
                        options={"max_attempts": 1})
    provider.set_credential("sk-test-tracing-0123456789")
    await sync_to_async(provider.save)()
    persona = await Persona.objects.acreate(slug="solo")
    await RouteStep.objects.acreate(persona=persona, provider=provider, model=fake.model)
    fake.script(Fault("status", status=429, message="slow down"))
    response = await post(world.red_key, model="solo")
    assert response.status_code == 429
    request, attempts = by_kind(spans)
    assert request.attributes["error.type"] == "provider_rate_limited"
    assert request.status.status_code == StatusCode.ERROR
    assert [a.attributes["error.type"] for a in attempts] == ["rate_limited"]
    assert (await row_of(response)).trace_id == format(request.context.trace_id, "032x")


@pytest.mark.asyncio
async def test_a_refused_request_has_its_span_and_trace_id_too(spans, world, transactional_db):
    response = await post(world.red_key, model="no-such-persona")
    assert response.status_code == 404
    request, attempts = by_kind(spans)
    assert attempts == []
    assert request.attributes["error.type"] == "model_not_found"
    assert request.attributes["http.response.status_code"] == 404
    assert (await row_of(response)).trace_id == format(request.context.trace_id, "032x") == response["X-Trace-Id"]


@pytest.mark.asyncio
async def test_a_streamed_request_span_ends_with_the_stream(spans, routed, world):
    routed.script(FakeReply(text="streamed words", input_tokens=11, output_tokens=4))
    response = await post(world.red_key, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert not [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]  # still streaming
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert b"[DONE]" in body
    request, attempts = by_kind(spans)
    assert request.attributes["ep.stream"] is True
    assert request.attributes["gen_ai.usage.output_tokens"] == 4
    assert "ep.ttft_ms" in request.attributes
    assert [a.attributes["gen_ai.usage.output_tokens"] for a in attempts] == [4]
    assert (await row_of(response)).trace_id == format(request.context.trace_id, "032x")


@pytest.mark.asyncio
async def test_the_callers_traceparent_makes_the_request_span_its_child(spans, world, transactional_db):
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = await AsyncClient().post(
        "/v1/chat/completions", json.dumps({"model": "architect", "messages": [{"role": "user", "content": "x"}]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {world.red_key}", "traceparent": f"00-{caller_trace}-{caller_span}-01"})
    assert response.status_code == 200
    request, _ = by_kind(spans)
    assert format(request.context.trace_id, "032x") == caller_trace == response["X-Trace-Id"]
    assert format(request.parent.span_id, "016x") == caller_span


@pytest.mark.asyncio
async def test_unauthenticated_requests_get_a_span_but_no_row(spans, transactional_db):
    before = await Usage.objects.acount()
    response = await AsyncClient().post("/v1/chat/completions", "{}", content_type="application/json",
                                        headers={"Authorization": "Bearer ep-wrong-key-000000000000"})
    assert response.status_code == 401
    request, _ = by_kind(spans)
    assert request.attributes["http.response.status_code"] == 401
    assert request.name == "POST /v1/chat/completions"
    assert await Usage.objects.acount() == before


@pytest.mark.asyncio
async def test_with_tracing_off_there_is_no_trace_id(world, transactional_db):
    tracing.install(None)
    response = await post(world.red_key, model="architect")
    assert response.status_code == 200
    assert "X-Trace-Id" not in response and "traceparent" not in response
    assert (await row_of(response)).trace_id == ""


def test_the_exporter_is_chosen_by_name():
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    assert tracing.processor_for("off") is None and tracing.processor_for("none") is None
    console = tracing.processor_for("console")
    assert isinstance(console, SimpleSpanProcessor) and isinstance(console.span_exporter, ConsoleSpanExporter)
    otlp = tracing.processor_for("otlp")
    assert isinstance(otlp, BatchSpanProcessor)
    exporter = otlp._batch_processor._exporter
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint.startswith(("http://localhost:4318", "http://127.0.0.1:4318"))  # never remote
    otlp.shutdown()
    with pytest.raises(ValueError, match="off, console or otlp"):
        tracing.processor_for("zipkin")


@pytest.mark.asyncio
async def test_the_native_endpoint_is_traced_the_same_way(spans, world, transactional_db):
    response = await AsyncClient().post(
        "/api/v1/chat", json.dumps({"persona": "architect", "messages": [{"role": "user", "content": "x"}]}),
        content_type="application/json", headers={"Authorization": f"Bearer {world.red_key}"})
    assert response.status_code == 200
    request, attempts = by_kind(spans)
    assert request.name == "chat architect"
    assert request.attributes["gen_ai.request.model"] == "architect"
    assert request.attributes["gen_ai.system"] == "demo"
    assert [a.attributes["gen_ai.system"] for a in attempts] == ["demo"]
    assert (await row_of(response)).trace_id == format(request.context.trace_id, "032x")
