"""Bedrock specifics: what Converse received (SigV4, turns, tools, images), the
event-stream framing and the pure mappings.

The shared behaviour (chat, stream, tools, images, usage, errors, cancellation)
is in test_adapter_conformance.py.
"""

from __future__ import annotations

import base64
import json

import pytest
import pytest_asyncio
from botocore.exceptions import ClientError

from providers.adapters.bedrock import (
    BedrockAdapter,
    StreamState,
    error_from_sdk,
    finish_reason_from_wire,
    request_to_wire,
    usage_from_wire,
)
from providers.types import ChatRequest, ImagePart, Message, ProviderError, TextPart, Tool, ToolCall
from tests.fakes.bedrock_server import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    FakeBedrockServer,
    exception_frame,
)
from tests.fakes.common import FakeReply, FakeToolCall, Fault

WEATHER = Tool(name="get_weather", description="Weather in a city",
               parameters={"type": "object", "properties": {"city": {"type": "string"}}})
PIXEL = b"\x89PNG\r\n\x1a\nfake-pixel"


@pytest.fixture(scope="module")
def fake():
    server = FakeBedrockServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.reset()
    yield
    fake.reset()


@pytest_asyncio.fixture(loop_scope="session")
async def make(fake):
    made = []

    def build(**overrides) -> BedrockAdapter:
        made.append(BedrockAdapter(fake.adapter_config(**overrides)))
        return made[-1]

    yield build
    for adapter in made:
        await adapter.aclose()


def ask(*messages: Message, **kwargs) -> ChatRequest:
    return ChatRequest(model=FakeBedrockServer.model, messages=list(messages), **kwargs)


async def collect(stream):
    return [event async for event in stream]


# -- what Bedrock receives -----------------------------------------------------------


@pytest.mark.asyncio
async def test_every_call_is_sigv4_signed_for_bedrock_in_the_providers_region(fake, make):
    await make().chat(ask(Message("user", "hi")))
    await collect(make().stream(ask(Message("user", "hi"))))
    assert [s["key"] for s in fake.signers] == [ACCESS_KEY_ID, ACCESS_KEY_ID]
    assert {s["region"] for s in fake.signers} == {REGION}
    assert all("x-amz-date" in s["signed"].split(";") for s in fake.signers)
    assert SECRET_ACCESS_KEY not in json.dumps(fake.requests)  # a signature, never the secret


@pytest.mark.asyncio
async def test_a_session_token_is_sent_with_temporary_keys(fake, make):
    await make(credential=fake.credential(session_token="FwoGZXIvYXdzEXAMPLE")).chat(ask(Message("user", "hi")))
    assert fake.signers[-1]["session_token"] == "FwoGZXIvYXdzEXAMPLE"


@pytest.mark.asyncio
async def test_the_model_id_goes_in_the_path(fake, make):
    await make().chat(ask(Message("user", "hi")))
    assert fake.requests[-1]["path"] == f"/model/{FakeBedrockServer.model}/converse"


@pytest.mark.asyncio
async def test_the_conversation_reaches_converse_in_its_shape(fake, make):
    call = ToolCall("tooluse_1", "get_weather", '{"city": "Oslo"}')
    request = ask(
        Message("system", "Be terse."),
        Message("user", [TextPart("Weather here?"), ImagePart(url="data:image/png;base64,"
                                                                   + base64.b64encode(PIXEL).decode())]),
        Message("assistant", None, tool_calls=[call]),
        Message("tool", '{"sky": "grey"}', tool_call_id="tooluse_1"),
        tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0.2, stop=["END"],
    )
    await make().chat(request)
    body = fake.requests[-1]["body"]
    assert body["system"] == [{"text": "Be terse."}]
    user, assistant, result = body["messages"]
    assert user["role"] == "user" and user["content"][0] == {"text": "Weather here?"}
    assert user["content"][1] == {"image": {"format": "png", "source": {"bytes": base64.b64encode(PIXEL).decode()}}}
    assert assistant == {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Oslo"}}}]}
    assert result == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": '{"sky": "grey"}'}]}}]}
    assert body["toolConfig"] == {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather in a city",
                                                          "inputSchema": {"json": WEATHER.parameters}}}],
                                  "toolChoice": {"any": {}}}
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2, "stopSequences": ["END"]}


@pytest.mark.asyncio
async def test_an_image_by_https_url_is_a_bad_request_before_any_call(fake, make):
    with pytest.raises(ProviderError) as caught:
        await make().chat(ask(Message("user", [ImagePart(url="https://example.com/cat.png")])))
    assert caught.value.kind == "bad_request" and "data: URLs" in caught.value.message
    assert fake.call_count == 0


@pytest.mark.asyncio
async def test_a_tool_call_streams_as_start_then_input_pieces(fake, make):
    fake.script(FakeReply(text="", tool_calls=[FakeToolCall("get_weather", {"city": "Rome"})], chunk_size=3))
    events = await collect(make().stream(ask(Message("user", "weather?"), tools=[WEATHER])))
    calls = [e for e in events if e.type == "tool_call"]
    assert calls[0].name == "get_weather" and calls[0].tool_call_id.startswith("tooluse_")
    assert len(calls) > 2 and all(c.index == 0 for c in calls)
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "Rome"}
    assert events[-1].type == "done" and events[-1].finish_reason == "tool_calls"


@pytest.mark.asyncio
async def test_an_exception_event_mid_stream_ends_in_its_error(fake, make, monkeypatch):
    from tests.fakes import bedrock_server

    frames = bedrock_server.stream_frames(FakeReply(text="partial answer"))
    throttled = frames[:2] + [exception_frame("throttlingException", "Too many tokens, please wait.")]
    monkeypatch.setattr(bedrock_server, "stream_frames", lambda reply: throttled)
    events = await collect(make().stream(ask(Message("user", "hi"))))
    assert events[0].type == "delta"
    assert events[-1].type == "error" and events[-1].error.kind == "rate_limited"
    assert "Too many tokens" in events[-1].error.message


@pytest.mark.asyncio
async def test_the_host_role_needs_no_stored_key(fake, make, monkeypatch):
    # aws_role: botocore's default chain; here it finds keys in the environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAROLEFROMENV00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "role-secret")
    await make(credential="", options={"region": REGION, "credential_type": "aws_role"}).chat(ask(Message("user", "hi")))
    assert fake.signers[-1]["key"] == "AKIAROLEFROMENV00001"


@pytest.mark.asyncio
async def test_a_credential_that_is_not_aws_keys_fails_as_auth_without_calling(fake, make):
    adapter = make(credential="", options={"region": REGION})
    with pytest.raises(ProviderError) as caught:
        await adapter.chat(ask(Message("user", "hi")))
    assert caught.value.kind == "auth" and "access_key_id" in caught.value.message
    events = await collect(adapter.stream(ask(Message("user", "hi"))))
    assert [e.type for e in events] == ["error"] and events[0].error.kind == "auth"
    assert fake.call_count == 0


# -- pure mappings -------------------------------------------------------------------


def test_json_schema_uses_output_config_and_json_object_the_system_prompt():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    params = request_to_wire(ask(Message("user", "hi"), response_format={
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}))
    definition = params["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert json.loads(definition["schema"]) == schema and definition["name"] == "thing"
    params = request_to_wire(ask(Message("user", "hi"), response_format={"type": "json_object"}))
    assert "JSON" in params["system"][0]["text"] and "outputConfig" not in params


def test_tool_choice_none_sends_no_tools_unless_the_history_has_tool_turns():
    assert "toolConfig" not in request_to_wire(ask(Message("user", "hi"), tools=[WEATHER], tool_choice="none"))
    history = [Message("user", "hi"), Message("assistant", None, tool_calls=[ToolCall("t1", "get_weather", "{}")]),
               Message("tool", "ok", tool_call_id="t1")]
    params = request_to_wire(ask(*history, tools=[WEATHER], tool_choice="none"))
    assert "toolChoice" not in params["toolConfig"] and params["toolConfig"]["tools"]


@pytest.mark.parametrize("reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("tool_use", "tool_calls"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("guardrail_intervened", "content_filter"),
    ("content_filtered", "content_filter"), ("malformed_tool_use", "error"),
])
def test_stop_reasons_map_to_finish_reasons(reason, finish):
    assert finish_reason_from_wire(reason) == finish


def test_usage_adds_cache_reads_and_writes_back_into_input():
    usage = usage_from_wire({"inputTokens": 4, "outputTokens": 250, "totalTokens": 4910,
                             "cacheReadInputTokens": 100, "cacheWriteInputTokens": 4556})
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.output_tokens) == (
        4660, 100, 4556, 250)


def test_a_stream_without_message_stop_is_incomplete():
    state = StreamState()
    state.events({"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "cut"}}})
    final = state.final("bedrock")
    assert final.type == "error" and final.error.kind == "unavailable"


def _client_error(code: str, status: int, message: str = "x", headers: dict | None = None) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}}}, "Converse")


@pytest.mark.parametrize("code, status, message, kind, retryable", [
    ("ThrottlingException", 429, "Too many requests", "rate_limited", True),
    ("ServiceQuotaExceededException", 400, "quota", "rate_limited", False),
    ("ModelNotReadyException", 429, "scaling", "rate_limited", True),
    ("ModelTimeoutException", 408, "slow", "timeout", True),
    ("AccessDeniedException", 403, "no access to this model", "auth", False),
    ("ExpiredTokenException", 400, "expired", "auth", False),
    ("ValidationException", 400, "Input is too long for requested model.", "context_length", False),
    ("ValidationException", 400, "bad field", "bad_request", False),
    ("serviceUnavailableException", 200, "in a stream", "unavailable", True),
])
def test_client_errors_map_to_the_taxonomy(code, status, message, kind, retryable):
    error = error_from_sdk(_client_error(code, status, message))
    assert (error.kind, error.retryable) == (kind, retryable)


def test_errors_never_carry_the_secret_key_even_if_echoed():
    credential = json.dumps({"access_key_id": "AKIA1", "secret_access_key": "s3cr3t-k3y", "session_token": "t0k"})
    error = error_from_sdk(_client_error("UnrecognizedClientException", 403, "bad s3cr3t-k3y t0k"),
                           secret=credential)
    assert "s3cr3t-k3y" not in error.message and "t0k" not in error.message


def test_retry_after_is_read_from_the_header():
    error = error_from_sdk(_client_error("ThrottlingException", 429, headers={"retry-after": "3"}))
    assert error.retry_after == 3.0


@pytest.mark.asyncio
async def test_a_stream_that_goes_silent_times_out_after_what_arrived(fake, make):
    fake.script(Fault("stall_stream", after_chunks=2, seconds=3, reply=FakeReply(text="slow answer here")))
    events = await collect(make(read_timeout=0.5).stream(ask(Message("user", "hi"))))
    assert [e.type for e in events[:2]] == ["delta", "delta"]
    assert events[-1].type == "error" and events[-1].error.kind == "timeout" and events[-1].error.retryable


@pytest.mark.asyncio
async def test_a_plain_answer_cut_mid_body_is_unavailable(fake, make):
    fake.script(Fault("cut", reply=FakeReply(text="a plain answer that is cut")))
    with pytest.raises(ProviderError) as caught:
        await make().chat(ask(Message("user", "hi")))
    assert caught.value.kind == "unavailable" and caught.value.retryable


ROLE = "arn:aws:iam::210987654321:role/bedrock-caller"


@pytest.mark.asyncio
async def test_a_role_is_assumed_with_the_stored_keys_and_its_keys_sign_the_calls(fake, make):
    adapter = make(options={"region": REGION, "role_arn": ROLE, "external_id": "ep-42",
                            "sts_endpoint_url": fake.base_url})
    await adapter.chat(ask(Message("user", "hi")))
    await collect(adapter.stream(ask(Message("user", "hi"))))
    (assumed,) = fake.assumed  # once: the temporary keys are reused until they near expiry
    assert assumed["signed_by"] == ACCESS_KEY_ID
    assert (assumed["form"]["RoleArn"], assumed["form"]["ExternalId"]) == (ROLE, "ep-42")
    assert [s["key"] for s in fake.signers] == [assumed["AccessKeyId"]] * 2
    assert {s["session_token"] for s in fake.signers} == {assumed["SessionToken"]}


@pytest.mark.asyncio
async def test_the_host_role_can_assume_a_role_too(fake, make, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAROLEFROMENV00002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "role-secret")
    adapter = make(credential="", options={"region": REGION, "credential_type": "aws_role", "role_arn": ROLE,
                                           "sts_endpoint_url": fake.base_url})
    await adapter.chat(ask(Message("user", "hi")))
    assert fake.assumed[0]["signed_by"] == "AKIAROLEFROMENV00002"
    assert fake.signers[-1]["key"] == fake.assumed[0]["AccessKeyId"]


@pytest.mark.asyncio
async def test_a_frame_with_a_wrong_checksum_is_an_unavailable_error_event(fake, make):
    fake.script(Fault("malformed"))
    events = await collect(make().stream(ask(Message("user", "hi"))))
    assert events[-1].type == "error" and events[-1].error.kind == "unavailable"
    assert "malformed" in events[-1].error.message


def test_the_fakes_frames_decode_with_botocores_own_parser():
    from botocore.eventstream import EventStreamBuffer

    from tests.fakes.bedrock_server import event_frame

    buffer = EventStreamBuffer()
    buffer.add_data(event_frame("messageStart", {"role": "assistant"}) + exception_frame("throttlingException", "x"))
    first, second = list(buffer)
    assert first.headers == {":event-type": "messageStart", ":content-type": "application/json",
                             ":message-type": "event"}
    assert json.loads(first.payload) == {"role": "assistant"}
    assert second.headers[":exception-type"] == "throttlingException"


@pytest.mark.asyncio
async def test_a_failed_tool_result_reaches_converse_with_status_error(fake, make):
    call = ToolCall("tooluse_1", "get_weather", '{"city": "Oslo"}')
    await make().chat(ask(Message("user", "Weather?"), Message("assistant", None, tool_calls=[call]),
                          Message("tool", "the weather service timed out", tool_call_id="tooluse_1", is_error=True),
                          tools=[WEATHER]))
    result = fake.requests[-1]["body"]["messages"][-1]["content"][0]["toolResult"]
    assert result == {"toolUseId": "tooluse_1", "status": "error",
                      "content": [{"text": "the weather service timed out"}]}
