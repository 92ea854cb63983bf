"""A fake Amazon Bedrock Runtime speaking its real wire protocol, for aiobotocore/botocore.

- POST /model/{modelId}/converse: the Converse JSON response (`output.message.content`
  with `text` / `toolUse` blocks, `stopReason`, `usage`, `metrics`);
- POST /model/{modelId}/converse-stream: `application/vnd.amazon.eventstream`, the
  binary AWS event-stream framing: each message is a prelude (total length, headers
  length), its CRC32, headers (`:event-type`, `:content-type`, `:message-type`),
  the JSON payload and a CRC32 of everything before it. Events in Bedrock's order:
  messageStart, contentBlockStart (tool calls only), contentBlockDelta...,
  contentBlockStop, messageStop, metadata (usage). An exception mid-stream is a
  message with `:message-type: exception` and `:exception-type`;
- errors as Bedrock sends them: the status, `x-amzn-ErrorType: <Code>:<namespace>`,
  `{"message": ...}`.

It also serves STS's AssumeRole (`POST /`, the query protocol: a form body,
an XML answer) for a provider that assumes a role: the temporary keys it hands
out (`assumed`) are the ones the Bedrock calls must then be signed with.

Every request must be SigV4-signed: `Authorization: AWS4-HMAC-SHA256 Credential=<key
id>/<date>/<region>/bedrock/aws4_request, SignedHeaders=..., Signature=<hex>` and an
`X-Amz-Date`. The signature itself is not recomputed (the fake does not know the
time the client signed at); its shape and credential scope are checked, and the key
ids that signed are kept in `signers`.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import re
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from providers.adapters.base import AdapterConfig
from tests.fakes.common import FakeProviderServer, FakeReply, Fault, sleep_or_disconnect

REGION = "eu-central-1"
ACCESS_KEY_ID = "AKIAFAKEBEDROCK00001"
SECRET_ACCESS_KEY = "fake/secret+access/key0123456789abcdefghij"
SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z-]+)"
    r"/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
ERROR_CODES = {400: "ValidationException", 401: "UnrecognizedClientException", 403: "AccessDeniedException",
               404: "ResourceNotFoundException", 408: "ModelTimeoutException", 424: "ModelErrorException",
               429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException"}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "content_filtered"}


class CutConnection(Exception):
    """Raised inside a streaming body so uvicorn drops the connection mid-answer."""


# -- the event-stream encoding -------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    # name length (1 byte), name, value type 7 (string), value length (2 bytes), value
    return bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with both CRC32 checksums."""
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    head = prelude + struct.pack(">I", binascii.crc32(prelude))
    message = head + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event_frame(event_type: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(body).encode())


def exception_frame(exception_type: str, message: str) -> bytes:
    headers = {":exception-type": exception_type, ":content-type": "application/json",
               ":message-type": "exception"}
    return frame(headers, json.dumps({"message": message}).encode())


# -- the server ----------------------------------------------------------------------


class FakeBedrockServer(FakeProviderServer):
    kind = "bedrock"
    model = "anthropic.claude-sonnet-4-6-v1:0"
    scriptable = True
    reports_reasoning_tokens = False

    def __init__(self) -> None:
        super().__init__()
        self.signers: list[dict[str, str]] = []  # the SigV4 credential scope of each Bedrock request
        self.assumed: list[dict[str, str]] = []  # each AssumeRole call: its form and the keys handed out
        # One entry per streamed answer: {"sent": frames so far, "completed", "closed"}.
        self.streams: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        self.signers = []
        self.assumed = []
        self.streams = []

    def credential(self, session_token: str | None = None) -> str:
        keys = {"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET_ACCESS_KEY}
        if session_token:
            keys["session_token"] = session_token
        return json.dumps(keys)

    def adapter_config(self, credential: str | None = None, **overrides: Any) -> AdapterConfig:
        if credential is not None and not credential.startswith("{"):
            # The battery passes a bare canary string: carry it as the secret key.
            credential = json.dumps({"access_key_id": ACCESS_KEY_ID, "secret_access_key": credential})
        fields: dict[str, Any] = dict(
            provider_id=7701, name="bedrock", kind="bedrock", base_url=self.base_url,
            credential=credential or self.credential(), read_timeout=10, connect_timeout=2,
            options={"region": REGION},
        )
        fields.update(overrides)
        return AdapterConfig(**fields)

    def context_length_fault(self) -> Fault:
        # What Bedrock answers when the prompt does not fit the model's window.
        return Fault("status", status=400, message="Input is too long for requested model.")

    # -- app ---------------------------------------------------------------------
    def build_app(self) -> Starlette:
        return Starlette(routes=[
            Route("/model/{model_id}/converse", self._converse, methods=["POST"]),
            Route("/model/{model_id}/converse-stream", self._converse_stream, methods=["POST"]),
            Route("/", self._sts, methods=["POST"]),
        ])

    def _unsigned(self, request: Request, service: str = "bedrock") -> Response | None:
        match = SIGV4.match(request.headers.get("authorization", ""))
        if match is None or not request.headers.get("x-amz-date"):
            return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        if (match["service"], match["region"]) != (service, REGION):
            return _error(403, "InvalidSignatureException",
                          f"Credential should be scoped to a valid region and the service 'bedrock', "
                          f"not '{match['region']}/{match['service']}'.")
        signed = set(match["signed"].split(";"))
        if not {"host", "x-amz-date"} <= signed:
            return _error(403, "InvalidSignatureException", "host and x-amz-date must be signed.")
        signer = {"key": match["key"], "region": match["region"], "signed": match["signed"],
                  "session_token": request.headers.get("x-amz-security-token", "")}
        if service == "bedrock":
            self.signers.append(signer)
        else:
            self.assumed.append({"signed_by": match["key"]})
        return None

    async def _sts(self, request: Request) -> Response:
        """STS AssumeRole: temporary keys for the role, in STS's XML."""
        form = dict(await request.form())
        self.record(request.url.path, dict(request.headers), form)
        refusal = self._unsigned(request, service="sts")
        if refusal is not None:
            return refusal
        if form.get("Action") != "AssumeRole" or not str(form.get("RoleArn", "")).startswith("arn:aws:iam::"):
            return Response(_sts_error("ValidationError", "RoleArn is required"), 400, media_type="text/xml")
        keys = {"AccessKeyId": "ASIA" + uuid.uuid4().hex[:16].upper(), "SecretAccessKey": uuid.uuid4().hex,
                "SessionToken": "FQoGZXIvYXdzE" + uuid.uuid4().hex}
        self.assumed[-1] |= {"form": form, **keys}
        return Response(_assume_role_xml(form, keys), 200, media_type="text/xml")

    async def _read(self, request: Request) -> tuple[Any, Response | None]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.record(request.url.path, dict(request.headers), body)
        refusal = self._unsigned(request)
        if refusal is None and (not isinstance(body, dict) or not body.get("messages")):
            refusal = _error(400, "ValidationException", "1 validation error detected: Value at 'messages' "
                                                         "failed to satisfy constraint: Member must not be null")
        return body, refusal

    async def _converse(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        item = self.next_script()
        if isinstance(item, Fault):
            return await self._fault(item, stream=False)
        return JSONResponse(converse_json(item), headers=_request_id())

    async def _converse_stream(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        item = self.next_script()
        if isinstance(item, Fault):
            return await self._fault(item, stream=True)
        return self._event_stream(stream_frames(item), item)

    # -- faults ------------------------------------------------------------------
    async def _fault(self, fault: Fault, *, stream: bool) -> Response:
        reply = fault.reply or self.default_reply
        if fault.kind == "status":
            code = fault.error_type or ERROR_CODES.get(fault.status, "InternalServerException")
            return _error(fault.status, code, fault.message, fault.retry_after)
        if fault.kind == "stall":
            await sleep_or_disconnect(fault.seconds)
            return JSONResponse(converse_json(reply)) if not stream else self._event_stream(stream_frames(reply),
                                                                                             reply)
        if fault.kind == "malformed":
            if stream:  # a frame whose message checksum is wrong
                good = event_frame("messageStart", {"role": "assistant"})
                broken = good[:-4] + struct.pack(">I", (binascii.crc32(good[:-4]) + 1) & 0xFFFFFFFF)
                return self._event_stream([good, broken], reply)
            return Response(b'{"output": {"message": {"content": [{"text": "br', media_type="application/json")
        if stream:
            return self._event_stream(stream_frames(reply), reply, then=fault)
        text = json.dumps(converse_json(reply)).encode()
        return self._event_stream([text[: len(text) // 2], text[len(text) // 2:]], reply, then=fault,
                                  media_type="application/json", keep=1)

    def _event_stream(self, frames: list[bytes], reply: FakeReply, *, then: Fault | None = None,
                      media_type: str = "application/vnd.amazon.eventstream", keep: int | None = None) -> Response:
        progress = {"sent": 0, "completed": False, "closed": False}
        self.streams.append(progress)
        # cut / stall_stream: messageStart plus `after_chunks` frames, then trouble
        keep = keep if keep is not None else (1 + then.after_chunks if then is not None else len(frames))

        async def body() -> AsyncIterator[bytes]:
            try:
                for i, piece in enumerate(frames):
                    if i == keep and then is not None:
                        if then.kind == "cut":
                            await asyncio.sleep(0.05)  # let what was sent reach the client first
                            raise CutConnection("fake: connection cut mid-stream")
                        await sleep_or_disconnect(then.seconds)
                    if i and reply.chunk_delay:
                        await asyncio.sleep(reply.chunk_delay)
                    yield piece
                    progress["sent"] += 1
                progress["completed"] = True
            finally:
                progress["closed"] = True

        return StreamingResponse(body(), media_type=media_type, headers=_request_id())


# -- wire shapes ---------------------------------------------------------------------


def _request_id() -> dict[str, str]:
    return {"x-amzn-RequestId": str(uuid.uuid4())}


def _error(status: int, code: str, message: str, retry_after: float | None = None) -> Response:
    headers = {"x-amzn-ErrorType": f"{code}:{NAMESPACE}", **_request_id()}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return JSONResponse({"message": message}, status, headers=headers)


def _assume_role_xml(form: dict, keys: dict[str, str]) -> str:
    role = form["RoleArn"].rsplit("/", 1)[-1]
    account = form["RoleArn"].split(":")[4]
    session = form.get("RoleSessionName", "session")
    return (
        '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
        f"<AssumedRoleUser><AssumedRoleId>AROAFAKE:{session}</AssumedRoleId>"
        f"<Arn>arn:aws:sts::{account}:assumed-role/{role}/{session}</Arn></AssumedRoleUser>"
        f"<Credentials><AccessKeyId>{keys['AccessKeyId']}</AccessKeyId>"
        f"<SecretAccessKey>{keys['SecretAccessKey']}</SecretAccessKey>"
        f"<SessionToken>{keys['SessionToken']}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>"
        "</Credentials></AssumeRoleResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></AssumeRoleResponse>"
    )


def _sts_error(code: str, message: str) -> str:
    return (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId>"
            "</ErrorResponse>")


def _tool_uses(reply: FakeReply) -> list[dict[str, Any]]:
    for call in reply.tool_calls:
        call.id = call.id or "tooluse_" + uuid.uuid4().hex[:22]
    return [{"toolUseId": c.id, "name": c.name, "input": c.arguments} for c in reply.tool_calls]


def usage_json(reply: FakeReply) -> dict[str, int]:
    # Bedrock's inputTokens leave cache reads out; totalTokens counts everything.
    fresh = reply.input_tokens - reply.cached_tokens
    usage = {"inputTokens": fresh, "outputTokens": reply.output_tokens,
             "totalTokens": reply.input_tokens + reply.output_tokens}
    if reply.cached_tokens:
        usage |= {"cacheReadInputTokens": reply.cached_tokens, "cacheWriteInputTokens": 0}
    return usage


def converse_json(reply: FakeReply) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"text": reply.text}] if reply.text else []
    content += [{"toolUse": use} for use in _tool_uses(reply)]
    return {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": STOP_REASONS[reply.finish_reason], "usage": usage_json(reply),
            "metrics": {"latencyMs": 42}}


def stream_frames(reply: FakeReply) -> list[bytes]:
    """Every frame of a streamed answer, in Bedrock's order."""
    frames = [event_frame("messageStart", {"role": "assistant"})]
    index = 0
    if reply.text:
        frames += [event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                   for piece in reply.text_chunks()]
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
        index = 1
    n = max(1, reply.chunk_size)
    for offset, use in enumerate(_tool_uses(reply)):
        block = index + offset
        start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
        frames.append(event_frame("contentBlockStart", {"contentBlockIndex": block, "start": start}))
        arguments = json.dumps(use["input"])
        frames += [event_frame("contentBlockDelta", {"contentBlockIndex": block,
                                                     "delta": {"toolUse": {"input": arguments[i:i + n]}}})
                   for i in range(0, len(arguments), n)]
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": block}))
    frames.append(event_frame("messageStop", {"stopReason": STOP_REASONS[reply.finish_reason]}))
    frames.append(event_frame("metadata", {"usage": usage_json(reply), "metrics": {"latencyMs": 42}}))
    return frames
