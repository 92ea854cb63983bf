"""The requests of a batch input file (OpenAI's JSONL, one request a line):
checked line by line when the file is uploaded, and run one by one by the
batch worker (gateway/batch_worker.py reaches the handlers below through
settings.EP_BATCH_HANDLERS, since the gateway layer cannot import the API's).

A line is `{"custom_id": "...", "method": "POST", "url": "/v1/chat/completions",
"body": {...}}`; the body is what the endpoint takes over HTTP, checked by the
same schema, less streaming.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from django.conf import settings
from pydantic import ValidationError

from api.openai_compat import ChatCompletionIn, completion_json, to_chat_request
from api.openai_embeddings import EmbeddingsIn, embeddings_json, inputs_of
from gateway import pipeline
from gateway.batches import BatchLine
from gateway.call import Call
from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge
from providers.types import EmbeddingRequest

# custom_id becomes the Usage row's `step`: its length and characters (gateway/routes.py).
CUSTOM_ID = re.compile("[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,100}")
# A \u0000 escape (not an escaped backslash before "u0000"): PostgreSQL cannot store a NUL character.
NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _chat_body(body: dict) -> ChatCompletionIn:
    parsed = ChatCompletionIn.model_validate(body)
    if parsed.stream:
        raise InvalidRequest("stream: true is not supported in a batch; the answer goes to the output file.",
                             code="stream_not_supported", param="body.stream")
    to_chat_request(parsed)  # refuses what the endpoint would (n > 1, ...)
    return parsed


def _embeddings_body(body: dict) -> EmbeddingsIn:
    parsed = EmbeddingsIn.model_validate(body)
    inputs_of(parsed.input)
    return parsed


# The endpoints a batch may target, and how each checks a line's body.
VALIDATORS: dict[str, Callable[[dict], object]] = {
    "/v1/chat/completions": _chat_body,
    "/v1/embeddings": _embeddings_body,
}


# -- the file, at upload --------------------------------------------------------------------


def lines_parse(content: bytes) -> list[BatchLine]:
    """Every request of an input file; raises InvalidRequest naming the first
    line that is not one (or PayloadTooLarge), so nothing bad is stored."""
    if len(content) > settings.EP_BATCH_FILE_MAX_BYTES:
        raise PayloadTooLarge(f"The file has {len(content)} bytes; this gateway keeps batch files of at most "
                              f"{settings.EP_BATCH_FILE_MAX_BYTES} bytes (EP_BATCH_FILE_MAX_BYTES).",
                              code="file_too_large", param="file")
    try:
        text: str | None = content.decode("utf-8-sig")  # a byte-order mark, as some editors write, is dropped
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise InvalidRequest("The file is not UTF-8 text (or holds NUL bytes): a batch file is JSONL, one JSON "
                             "request a line.", code="invalid_file_encoding", param="file")
    lines, seen = [], set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        line = _line_parse(number, raw)
        if line.custom_id in seen:
            raise _bad_line(number, f"custom_id '{line.custom_id}' is used by an earlier line; each must be unique.")
        seen.add(line.custom_id)
        lines.append(line)
        if len(lines) > settings.EP_BATCH_MAX_REQUESTS:
            raise InvalidRequest(f"The file has more than {settings.EP_BATCH_MAX_REQUESTS} requests, the most one "
                                 "batch may hold (EP_BATCH_MAX_REQUESTS).", code="too_many_requests_in_file",
                                 param="file")
    if not lines:
        raise InvalidRequest("The file holds no requests: a batch file is JSONL, one JSON request a line.",
                             code="empty_file", param="file")
    return lines


def _line_parse(number: int, raw: str) -> BatchLine:
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise _bad_line(number, f"not valid JSON ({error.msg} at column {error.colno}).") from None
    except (ValueError, RecursionError) as error:
        raise _bad_line(number, f"not valid JSON ({error}).") from None
    if NUL_ESCAPE.search(raw):
        raise _bad_line(number, "it holds a NUL character (\\u0000), which this gateway cannot store.")
    if not isinstance(data, dict):
        raise _bad_line(number, "a line must be a JSON object with custom_id, method, url and body.")
    custom_id, method, url, body = (data.get(k) for k in ("custom_id", "method", "url", "body"))
    if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
        raise _bad_line(number, "custom_id must be a string of 1 to 100 characters, none of them control characters.")
    if method != "POST":
        raise _bad_line(number, f"method must be \"POST\", not {json.dumps(method)}.")
    if url not in VALIDATORS:
        raise _bad_line(number, f"url {json.dumps(url)} is not an endpoint batches can call; use one of "
                                f"{', '.join(VALIDATORS)}.")
    if not isinstance(body, dict):
        raise _bad_line(number, "body must be a JSON object: the request the endpoint takes.")
    try:
        VALIDATORS[url](body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise _bad_line(number, f"body.{where}: {first.get('msg', 'invalid')}." if where else first["msg"]) from None
    except GatewayError as error:
        raise _bad_line(number, error.message) from None
    return BatchLine(number, custom_id, url, body)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _bad_line(number: int, problem: str) -> InvalidRequest:
    return InvalidRequest(f"Line {number} of the file is not a valid batch request: {problem}",
                          code="invalid_batch_line", param="file")


# -- the requests, in the worker ------------------------------------------------------------


async def chat_line(call: Call, body: dict) -> dict:
    """A /v1/chat/completions request of a batch: the chat.completion it answers."""
    parsed = _chat_body(body)
    chat_request = to_chat_request(parsed)
    route = await pipeline.begin(call, chat_request, model=parsed.model, run_id=call.run_id, step=call.step)
    result = await pipeline.complete(call, route, chat_request)
    return completion_json(call, result)


async def embeddings_line(call: Call, body: dict) -> dict:
    """A /v1/embeddings request of a batch: the embeddings list it answers."""
    parsed = _embeddings_body(body)
    request = EmbeddingRequest(model=parsed.model, inputs=inputs_of(parsed.input), dimensions=parsed.dimensions,
                               user=parsed.user)
    route = await pipeline.begin_embedding(call, request, model=parsed.model, run_id=call.run_id, step=call.step)
    result = await pipeline.embed(call, route, request)
    return embeddings_json(call, result, parsed.encoding_format)
