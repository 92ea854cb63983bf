"""A fake Gemini API (generativelanguage.googleapis.com) speaking the real wire format.

The official `google-genai` SDK runs unchanged against it (HttpOptions.base_url =
the fake), so the adapter's request building, response parsing, SSE handling and
error mapping are exercised end to end. Shapes follow what the Gemini API returns:
- POST /{version}/models/{model}:generateContent -> a GenerateContentResponse
  (candidates[0].content.parts with text / functionCall, finishReason,
  usageMetadata, modelVersion, responseId);
- POST /{version}/models/{model}:streamGenerateContent?alt=sse -> `data: {...}`
  events, each a GenerateContentResponse; the last carries finishReason and the
  final usageMetadata;
- errors as {"error": {"code", "message", "status", "details"}}.
Function calls carry no `id` unless the script gives one: the public Gemini API
leaves ids out for most models, so the adapter must make its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from providers.adapters.base import AdapterConfig
from tests.fakes.common import FakeProviderServer, FakeReply, Fault, fake_vector, sleep_or_disconnect, sse

# google.rpc.Code names the Gemini API puts in `error.status`, per HTTP status.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
_FINISH = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}


class CutConnection(Exception):
    """Raised inside a streaming body so uvicorn drops the connection mid-response."""


def error_body(status: int, message: str, error_type: str | None = None,
               retry_after: float | None = None) -> dict:
    """Gemini's error envelope. `error_type` is a status name (RESOURCE_EXHAUSTED...)
    or, when it is not one, an ErrorInfo reason such as API_KEY_INVALID."""
    names = set(STATUS_NAMES.values())
    status_name = error_type if error_type in names else STATUS_NAMES.get(status, "UNKNOWN")
    details: list[dict] = []
    if error_type and error_type not in names:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": error_type,
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"}})
    if retry_after is not None:
        delay = f"{int(retry_after)}s" if float(retry_after).is_integer() else f"{retry_after}s"
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name}
    if details:
        error["details"] = details
    return {"error": error}


class FakeGeminiServer(FakeProviderServer):
    kind = "gemini"
    model = "gemini-2.5-flash"
    scriptable = True
    reports_reasoning_tokens = True
    embedding_dimensions = 16

    def __init__(self) -> None:
        super().__init__()
        # One entry per streamed response: {"sent": chunks so far, "completed", "closed"}.
        # Lets tests see that a client going away stopped the stream.
        self.streams: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        self.streams = []

    def adapter_config(self, credential: str = "AIza-test-fake", **overrides: Any) -> AdapterConfig:
        fields: dict[str, Any] = dict(
            provider_id=7301, name="gemini", kind="gemini", base_url=self.base_url,
            credential=credential, read_timeout=10, connect_timeout=2,
        )
        fields.update(overrides)
        return AdapterConfig(**fields)

    def context_length_fault(self) -> Fault:
        # What the Gemini API answers when the prompt does not fit the model's window.
        return Fault(
            "status", status=400, error_type="INVALID_ARGUMENT",
            message="The input token count (1290543) exceeds the maximum number of tokens allowed (1048576).",
        )

    def invalid_key_fault(self) -> Fault:
        # A wrong key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, not a 401.
        return Fault("status", status=400, error_type="API_KEY_INVALID",
                     message="API key not valid. Please pass a valid API key.")

    # -- app -------------------------------------------------------------------
    def build_app(self) -> Starlette:
        # {model_action} is "gemini-2.5-flash:generateContent": Starlette params stop at "/" only.
        route = Route("/{version}/models/{model_action}", self._models_call, methods=["POST"])
        return Starlette(routes=[route, Route("/{version}/models", self._models_list, methods=["GET"])])

    async def _models_list(self, request: Request) -> Response:
        """GET /v1beta/models: the Gemini API's list, with token limits and supported methods."""
        self.record(request.url.path, dict(request.headers), None)
        if (refusal := self._unauthenticated(request)) is not None:
            return refusal
        return JSONResponse({"models": [
            {"name": f"models/{self.model}", "displayName": "Gemini Flash", "inputTokenLimit": 1048576,
             "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"]},
            {"name": "models/gemini-embedding-001", "displayName": "Gemini Embedding", "inputTokenLimit": 2048,
             "outputTokenLimit": 1, "supportedGenerationMethods": ["embedContent"]},
        ]})

    async def _models_call(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        self.record(path, dict(request.headers), body)
        model, _, action = request.path_params["model_action"].partition(":")
        if (refusal := self._unauthenticated(request)) is not None:
            return refusal
        if action in ("batchEmbedContents", "embedContent"):
            return self._embed(body, action)
        if action not in ("generateContent", "streamGenerateContent"):
            return JSONResponse(error_body(404, f"Method {action!r} not found."), 404)
        if not isinstance(body, dict) or not body.get("contents"):
            message = "* GenerateContentRequest.contents: contents is not specified"
            return JSONResponse(error_body(400, message), 400)
        stream = action == "streamGenerateContent"
        if stream and request.query_params.get("alt") != "sse":
            return JSONResponse(error_body(400, "this fake only streams with alt=sse"), 400)
        script = self.next_script()
        if isinstance(script, Fault):
            return await self._fault(script, model, stream)
        return self._answer(script, model, stream)

    def _unauthenticated(self, request: Request) -> Response | None:
        if request.headers.get("x-goog-api-key") or request.query_params.get("key"):
            return None
        return JSONResponse(error_body(
            403, "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API."), 403)

    def _embed(self, body: Any, action: str) -> Response:
        """Gemini's embeddings: {"embeddings": [{"values": [...]}]} (no token counts, as the API)."""
        requests = (body or {}).get("requests") if action == "batchEmbedContents" else [body or {}]
        if not requests:
            return JSONResponse(error_body(400, "* BatchEmbedContentsRequest.requests: requests is empty"), 400)
        out = []
        for item in requests:
            text = " ".join(part.get("text", "") for part in (item.get("content") or {}).get("parts", []))
            dimensions = int(item.get("outputDimensionality") or self.embedding_dimensions)
            out.append({"values": fake_vector(text, dimensions)})
        if action == "embedContent":
            return JSONResponse({"embedding": out[0]})
        return JSONResponse({"embeddings": out})

    def _answer(self, reply: FakeReply, model: str, stream: bool) -> Response:
        if stream:
            return self._sse(self._chunks(reply, model), reply)
        return JSONResponse(self._response(reply, model))

    async def _fault(self, fault: Fault, model: str, stream: bool) -> Response:
        reply = fault.reply or self.default_reply
        if fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["retry-after"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            body = error_body(fault.status, fault.message, fault.error_type, fault.retry_after)
            return JSONResponse(body, fault.status, headers)
        if fault.kind == "stall":
            await sleep_or_disconnect(fault.seconds)
            return self._answer(reply, model, stream)
        if fault.kind == "malformed":
            if stream:
                broken = [sse(self._chunks(reply, model)[0]), b'data: {"candidates": [{"content": \n\n']
                return self._sse(broken, reply, encoded=True)
            broken = b'{"candidates": [{"content": {"parts": [{"text": "br'
            return Response(broken, media_type="application/json")
        # cut / stall_stream: `after_chunks` pieces of the reply, then trouble
        if stream:
            chunks = [sse(c) for c in self._chunks(reply, model)]
            keep = fault.after_chunks
        else:
            text = json.dumps(self._response(reply, model)).encode()
            chunks = [text[i:i + 16] for i in range(0, len(text), 16)]
            keep = max(1, min(fault.after_chunks, len(chunks) - 1))
        return self._sse(chunks[:keep], reply, encoded=True, then=fault, rest=chunks[keep:],
                         media_type="text/event-stream" if stream else "application/json")

    # -- wire shapes -------------------------------------------------------------
    @staticmethod
    def usage(reply: FakeReply, final: bool = True) -> dict:
        # Gemini counts thoughts apart from candidates; promptTokenCount includes cached tokens.
        usage: dict[str, Any] = {"promptTokenCount": reply.input_tokens}
        if final:
            usage["candidatesTokenCount"] = reply.output_tokens - reply.reasoning_tokens
            usage["totalTokenCount"] = reply.input_tokens + reply.output_tokens
            if reply.reasoning_tokens:
                usage["thoughtsTokenCount"] = reply.reasoning_tokens
        else:
            usage["totalTokenCount"] = reply.input_tokens
        if reply.cached_tokens:
            usage["cachedContentTokenCount"] = reply.cached_tokens
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.cached_tokens}]
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.input_tokens}]
        return usage

    @staticmethod
    def thought_signature(name: str) -> str:
        """The opaque signature the fake puts on a turn's first call (base64, as on the wire)."""
        return base64.b64encode(f"fake-thought-signature:{name}".encode()).decode()

    def _call_parts(self, reply: FakeReply) -> list[dict]:
        parts = []
        for i, call in enumerate(reply.tool_calls):
            fc: dict[str, Any] = {"name": call.name, "args": call.arguments}
            if call.id:
                fc["id"] = call.id
            part: dict[str, Any] = {"functionCall": fc}
            if i == 0:  # thinking models sign the first function call of a turn only
                part["thoughtSignature"] = self.thought_signature(call.name)
            parts.append(part)
        return parts

    def _response(self, reply: FakeReply, model: str) -> dict:
        parts: list[dict] = [{"text": reply.text}] if reply.text else []
        parts += self._call_parts(reply)
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"},
                                     "finishReason": _FINISH[reply.finish_reason], "index": 0}
        if reply.finish_reason == "content_filter":
            candidate["safetyRatings"] = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                                           "probability": "HIGH", "blocked": True}]
        if not parts:
            del candidate["content"]["parts"]
        return {"candidates": [candidate], "usageMetadata": self.usage(reply),
                "modelVersion": model, "responseId": uuid.uuid4().hex[:22]}

    def _chunks(self, reply: FakeReply, model: str) -> list[dict]:
        """The streamed GenerateContentResponses: text pieces, then calls, then the finish."""
        response_id = uuid.uuid4().hex[:22]

        def chunk(parts: list[dict], final: bool = False) -> dict:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if final:
                candidate["finishReason"] = _FINISH[reply.finish_reason]
            return {"candidates": [candidate], "usageMetadata": self.usage(reply, final),
                    "modelVersion": model, "responseId": response_id}

        pieces = [chunk([{"text": t}]) for t in reply.text_chunks()]
        if reply.tool_calls:
            pieces.append(chunk(self._call_parts(reply)))
        # The real API ends with an empty-text part carrying finishReason and the totals.
        pieces.append(chunk([{"text": ""}], final=True))
        return pieces

    def _sse(self, chunks: list, reply: FakeReply, *, encoded: bool = False, then: Fault | None = None,
             rest: list | None = None, media_type: str = "text/event-stream") -> StreamingResponse:
        state = {"sent": 0, "completed": False, "closed": False}
        self.streams.append(state)

        async def body():
            try:
                for i, c in enumerate(chunks):
                    if i and reply.chunk_delay:
                        await asyncio.sleep(reply.chunk_delay)
                    yield c if encoded else sse(c)
                    state["sent"] += 1
                if then is not None and then.kind == "stall_stream":
                    await sleep_or_disconnect(then.seconds)
                    for c in rest or []:
                        yield c
                elif then is not None:  # cut
                    await asyncio.sleep(0.05)  # let what was sent reach the client first
                    raise CutConnection("connection dropped by the fake")
                state["completed"] = True
            finally:
                state["closed"] = True

        return StreamingResponse(body(), media_type=media_type)
