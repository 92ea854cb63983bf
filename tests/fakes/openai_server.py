"""A fake OpenAI Chat Completions server speaking the real wire format.

The official `openai` SDK runs unchanged against it (base_url = fake + "/v1"), so
the adapter's request building, response parsing, SSE handling and error
mapping are exercised end to end. Shapes follow what api.openai.com returns:
`chat.completion` JSON, `chat.completion.chunk` SSE ending in `data: [DONE]`,
and the `{"error": {"message", "type", "param", "code"}}` envelope.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from providers.adapters.base import AdapterConfig
from tests.fakes.common import FakeProviderServer, FakeReply, Fault, fake_vector, sleep_or_disconnect, sse

# OpenAI's own error `type` per status; `code` comes from Fault.error_type.
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                404: "invalid_request_error", 422: "invalid_request_error", 429: "requests"}
_DEFAULT_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


class CutConnection(Exception):
    """Raised inside a streaming body so uvicorn drops the connection mid-response."""


def _hex(n: int = 24) -> str:
    return uuid.uuid4().hex[:n]


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = code or _DEFAULT_CODES.get(status)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class FakeOpenAIServer(FakeProviderServer):
    kind = "openai"
    model = "gpt-4o-mini"
    scriptable = True
    reports_reasoning_tokens = True
    embedding_dimensions = 16

    def __init__(self) -> None:
        super().__init__()
        # One entry per streamed response: {"sent": chunks so far, "completed", "closed"}.
        # Lets tests see that a client going away stopped the stream.
        self.streams: list[dict[str, Any]] = []
        # Extra headers on `status` fault responses, e.g. a Retry-After given as an HTTP date.
        self.error_headers: dict[str, str] = {}

    def reset(self) -> None:
        super().reset()
        self.streams = []
        self.error_headers = {}

    def adapter_config(self, credential: str = "sk-test-fake", **overrides: Any) -> AdapterConfig:
        fields: dict[str, Any] = dict(
            provider_id=7101, name="openai", kind="openai", base_url=self.base_url + "/v1",
            credential=credential, read_timeout=10, connect_timeout=2,
        )
        fields.update(overrides)
        return AdapterConfig(**fields)

    def context_length_fault(self) -> Fault:
        # The body api.openai.com sends when the prompt does not fit the model.
        return Fault(
            "status", status=400, error_type="context_length_exceeded",
            message="This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 131072 tokens. Please reduce the length of the messages.",
        )

    # -- app -------------------------------------------------------------------
    def build_app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/responses", self._responses, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    def _unauthorized(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer "):].strip():
            return None
        body = error_body(401, "You didn't provide an API key. You need to provide your API key in an "
                          "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        body["error"]["code"] = None
        return JSONResponse(body, status_code=401)

    async def _models(self, request: Request) -> Response:
        self.record(request.url.path, dict(request.headers), None)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        model = {"id": self.model, "object": "model", "created": 1721172741, "owned_by": "system"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _received(self, request: Request, required: str, message: str) -> tuple[dict, Response | None]:
        """The request's JSON body, recorded; and the refusal a real server would send
        instead (no key; no JSON object with `model` and `required`), if any."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        self.record(request.url.path, dict(request.headers), body)
        if (denied := self._unauthorized(request)) is not None:
            return body, denied
        if not isinstance(body, dict) or "model" not in body or required not in body:
            param = required if required != "messages" else None
            return body, JSONResponse(error_body(400, message, param=param), 400)
        return body, None

    async def _chat(self, request: Request) -> Response:
        body, refusal = await self._received(request, "messages", "We could not parse the JSON body of your request.")
        if refusal is not None:
            return refusal
        script = self.next_script()
        if isinstance(script, Fault):
            return await self._fault(script, body)
        return self._answer(script, body)

    async def _embeddings(self, request: Request) -> Response:
        """POST /v1/embeddings: one deterministic vector per input; tokens ~ words."""
        body, refusal = await self._received(request, "input", "'input' is a required property")
        if refusal is not None:
            return refusal
        script = self.next_script()
        if isinstance(script, Fault) and script.kind == "status":
            return JSONResponse(error_body(script.status, script.message, script.error_type), script.status)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and isinstance(inputs[0], int):
            inputs = [inputs]  # one token array
        dimensions = int(body.get("dimensions") or self.embedding_dimensions)
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(str(text), dimensions)}
                for i, text in enumerate(inputs)]
        # a token array counts its ids; text counts ~ words
        tokens = sum(len(text) if isinstance(text, list) else max(1, len(text.split())) for text in inputs)
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _responses(self, request: Request) -> Response:
        """POST /v1/responses: OpenAI's Responses API, JSON or its typed SSE events."""
        body, refusal = await self._received(request, "input", "Missing required parameter: 'input'.")
        if refusal is not None:
            return refusal
        script = self.next_script()
        reply = (script.reply or self.default_reply) if isinstance(script, Fault) else script
        if isinstance(script, Fault) and script.kind == "status":
            return JSONResponse(error_body(script.status, script.message, script.error_type), script.status)
        if isinstance(script, Fault) and script.kind == "stall":
            await sleep_or_disconnect(script.seconds)
        if not body.get("stream"):
            return JSONResponse(self._response_object(reply, body), headers={"x-request-id": f"req_{_hex(32)}"})
        events = self._response_events(reply, body)
        if isinstance(script, Fault) and script.kind == "cut":
            keep = 2 + script.after_chunks  # created, in_progress, then that many more
            return self._sse(events[:keep], reply, {}, then=script)
        return self._sse(events, reply, {})

    def _response_output(self, reply: FakeReply, body: dict) -> list[dict]:
        output: list[dict] = []
        if reply.text or not reply.tool_calls:
            logprobs = (self._logprobs(reply, {"logprobs": True, "top_logprobs": body.get("top_logprobs")})
                        if "message.output_text.logprobs" in (body.get("include") or []) else None)
            part = {"type": "output_text", "text": reply.text, "annotations": [],
                    "logprobs": logprobs["content"] if logprobs else []}
            output.append({"id": f"msg_{_hex()}", "type": "message", "role": "assistant", "status": "completed",
                           "content": [part]})
        for call in self._tool_calls(reply):
            output.append({"id": f"fc_{_hex()}", "type": "function_call", "call_id": call["id"],
                           "name": call["function"]["name"], "arguments": call["function"]["arguments"],
                           "status": "completed"})
        return output

    def _response_object(self, reply: FakeReply, body: dict, *, status: str | None = None,
                         output: list[dict] | None = None) -> dict:
        reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(reply.finish_reason)
        status = status or ("incomplete" if reason else "completed")
        usage = {"input_tokens": reply.input_tokens, "input_tokens_details": {"cached_tokens": reply.cached_tokens},
                 "output_tokens": reply.output_tokens,
                 "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
                 "total_tokens": reply.input_tokens + reply.output_tokens}
        return {
            "id": f"resp_{_hex(48)}", "object": "response", "created_at": int(time.time()), "status": status,
            "error": None, "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"], "output": self._response_output(reply, body) if output is None else output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True), "previous_response_id": None,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0), "truncation": "disabled",
            "usage": usage if status in ("completed", "incomplete") else None, "metadata": {},
        }

    def _response_events(self, reply: FakeReply, body: dict) -> list[bytes]:
        """The typed events of a streamed response, in api.openai.com's order."""
        events: list[bytes] = []

        def emit(kind: str, **fields: Any) -> None:
            events.append(sse({"type": kind, "sequence_number": len(events), **fields}, event=kind))

        opening = self._response_object(reply, body, status="in_progress", output=[])
        emit("response.created", response=opening)
        emit("response.in_progress", response=opening)
        output = self._response_output(reply, body)
        for index, item in enumerate(output):
            if item["type"] == "message":
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "content": []})
                emit("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                     part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
                for piece in reply.text_chunks():
                    emit("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                         delta=piece, logprobs=[])
                emit("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                     text=reply.text, logprobs=[])
                emit("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                     part=item["content"][0])
            else:
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "arguments": ""})
                args, n = item["arguments"], max(1, reply.chunk_size)
                for i in range(0, len(args), n):
                    emit("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                         delta=args[i : i + n])
                emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                     name=item["name"], arguments=args)
            emit("response.output_item.done", output_index=index, item=item)
        final = self._response_object(reply, body, output=output)
        emit("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
        return events

    def _answer(self, reply: FakeReply, body: dict) -> Response:
        headers = {"x-request-id": f"req_{_hex(32)}"}
        if body.get("stream"):
            chunks = self._chunks(reply, body)
            return self._sse(chunks, reply, headers)
        return JSONResponse(self._completion(reply, body), headers=headers)

    async def _fault(self, fault: Fault, body: dict) -> Response:
        reply = fault.reply or self.default_reply
        if fault.kind == "status":
            headers = dict(self.error_headers)
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["retry-after"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            body = error_body(fault.status, fault.message, fault.error_type)
            return JSONResponse(body, fault.status, headers)
        if fault.kind == "stall":
            await sleep_or_disconnect(fault.seconds)
            return self._answer(reply, body)
        if fault.kind == "malformed":
            if body.get("stream"):
                bad_line = b'data: {"id": "chatcmpl-broken", "choices": [{\n\n'
                broken = self._chunks(reply, body)[:1] + [bad_line]
                return self._sse(broken, reply, {})
            return Response(b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [',
                            media_type="application/json")
        # cut / stall_stream: the reply's preamble plus `after_chunks` pieces of it, then trouble
        chunks = self._chunks(reply, body) if body.get("stream") else self._json_pieces(reply, body)
        keep = 1 + fault.after_chunks if body.get("stream") else 1
        return self._sse(chunks[:keep], reply, {}, then=fault, rest=chunks[keep:],
                         media_type=None if body.get("stream") else "application/json")

    # -- wire shapes -------------------------------------------------------------
    @staticmethod
    def _usage(reply: FakeReply) -> dict:
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _tool_calls(reply: FakeReply) -> list[dict]:
        return [
            {"id": call.id or f"call_{_hex()}", "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
            for call in reply.tool_calls
        ]

    def _completion(self, reply: FakeReply, body: dict) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None,
                                   "refusal": None, "annotations": []}
        if reply.tool_calls:
            message["tool_calls"] = self._tool_calls(reply)
        return {
            "id": f"chatcmpl-{_hex()}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": "fp_fake0001", "service_tier": "default",
            "choices": [
                {"index": 0, "message": message, "logprobs": self._logprobs(reply, body),
                 "finish_reason": reply.finish_reason}
            ],
            "usage": self._usage(reply),
        }

    @staticmethod
    def _logprobs(reply: FakeReply, body: dict) -> dict | None:
        """OpenAI's choice.logprobs when asked: one entry per word of the answer."""
        if not body.get("logprobs"):
            return None
        top = int(body.get("top_logprobs") or 0)
        content = []
        for i, word in enumerate((reply.text or "").split()):
            entry = {"token": word, "logprob": -0.1 * (i + 1), "bytes": list(word.encode())}
            entry["top_logprobs"] = [{"token": word, "logprob": -0.1 * (i + 1), "bytes": list(word.encode())}][:top]
            content.append(entry)
        return {"content": content, "refusal": None}

    def _json_pieces(self, reply: FakeReply, body: dict) -> list[bytes]:
        """A non-streamed body split in pieces, so `cut` can drop it half-sent."""
        data = json.dumps(self._completion(reply, body)).encode()
        half = max(1, len(data) // 2)
        return [data[:half], data[half:]]

    def _chunks(self, reply: FakeReply, body: dict) -> list[bytes]:
        """Every SSE event of a streamed answer, in OpenAI's order."""
        base = {"id": f"chatcmpl-{_hex()}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "fp_fake0001"}
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data = {**base, "choices": [choice]}
            if with_usage:
                data["usage"] = None  # OpenAI sends an explicit null until the last chunk
            return sse(data)

        out = [chunk({"role": "assistant", "content": "" if reply.text else None, "refusal": None})]
        out += [chunk({"content": piece}) for piece in reply.text_chunks()]
        out += self._tool_call_chunks(reply, chunk)
        out.append(chunk({}, reply.finish_reason))
        if with_usage:
            out.append(sse({**base, "choices": [], "usage": self._usage(reply)}))
        out.append(b"data: [DONE]\n\n")
        return out

    def _tool_call_chunks(self, reply: FakeReply, chunk) -> list[bytes]:
        out = []
        n = max(1, reply.chunk_size)
        for index, call in enumerate(self._tool_calls(reply)):
            fn = call["function"]
            out.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                              "function": {"name": fn["name"], "arguments": ""}}]}))
            args = fn["arguments"]
            out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": args[i : i + n]}}]})
                    for i in range(0, len(args), n)]
        return out

    def _sse(self, chunks: list[bytes], reply: FakeReply, headers: dict, *, then: Fault | None = None,
             rest: list[bytes] = (), media_type: str | None = None) -> StreamingResponse:
        progress = {"sent": 0, "total": len(chunks) + len(rest), "completed": False, "closed": False}
        self.streams.append(progress)

        async def body():
            try:
                for piece in chunks:
                    if progress["sent"] and reply.chunk_delay:
                        await asyncio.sleep(reply.chunk_delay)
                    yield piece
                    progress["sent"] += 1
                if then is not None and then.kind == "cut":
                    raise CutConnection("fake: connection cut mid-stream")
                if then is not None:  # stall_stream: go silent, then finish if anyone still listens
                    await asyncio.sleep(then.seconds)
                    for piece in rest:
                        yield piece
                        progress["sent"] += 1
                progress["completed"] = True
            finally:
                progress["closed"] = True

        return StreamingResponse(body(), media_type=media_type or "text/event-stream", headers=headers)
