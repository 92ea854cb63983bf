"""POST /v1/embeddings in OpenAI's wire format.

`model` routes like chat: a persona whose steps are embedding models, or
`provider/model` for keys with the `direct` scope. Each request is admitted,
reserved against the budgets (input tokens at the model's input price), settled
and recorded as one Usage row, like a chat request. `input` is a string or an
array of strings, or token arrays (one array, or an array of arrays of OpenAI
token ids, as LangChain sends them): those reach only providers that share
OpenAI's tokenizer (openai; demo embeds the ids), and a route with none of them
refuses with `token_inputs_not_supported`. `encoding_format`
"base64" packs each vector as little-endian float32, as OpenAI does.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Router
from pydantic import ConfigDict

from api import idempotency
from api.auth import ApiKeyAuth, begin_options
from api.errors import CHAT, error_response, error_responses
from api.responses import json_response, served_by_headers
from api.wire_model import WireModel
from gateway import pipeline
from gateway.call import Call
from gateway.errors import InvalidRequest
from providers.types import EmbeddingRequest, EmbeddingResult

router = Router(tags=["OpenAI compatible"], auth=ApiKeyAuth())


class EmbeddingsIn(WireModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, max_length=300)
    input: str | list[Any] = Field(..., description="A string, an array of strings, a token array or an array of "
                                   "token arrays (OpenAI routes only).")
    dimensions: int | None = Field(None, ge=1, le=65536)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(None, max_length=300)
    metadata: dict[str, str] | None = None


def inputs_of(value: str | list[Any]) -> list[str] | list[list[int]]:
    """The texts (or token arrays) to embed; a malformed input is refused by name."""
    items = [value] if isinstance(value, str) else value
    if not items:
        raise InvalidRequest("input is empty: send a string or a non-empty array of strings.", param="input")
    if all(_is_token_id(item) for item in items):
        items = [items]  # one token array
    if all(isinstance(item, list) for item in items):
        return [_token_array(i, item) for i, item in enumerate(items)]
    if not all(isinstance(item, str) for item in items):
        raise InvalidRequest("input must be a string or an array of strings.", param="input")
    if any(not item for item in items):
        raise InvalidRequest("input contains an empty string; every input must have text.", param="input")
    return items


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _token_array(index: int, item: list[Any]) -> list[int]:
    if not item or not all(_is_token_id(token) for token in item):
        raise InvalidRequest(f"input.{index}: a token array must be a non-empty array of token ids "
                             "(non-negative integers).", param="input")
    return item


def vector_json(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings_json(call: Call, result: EmbeddingResult, encoding: str) -> dict:
    data = [{"object": "embedding", "index": i, "embedding": vector_json(v, encoding)}
            for i, v in enumerate(result.vectors)]
    tokens = result.usage.input_tokens
    return {"object": "list", "data": data, "model": call.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@router.post("/embeddings", summary="Create embeddings (OpenAI format)",
             response={200: dict, **error_responses(*CHAT)})
async def create_embeddings(request: HttpRequest, body: EmbeddingsIn):
    call: Call = request.ep_call
    embedding_request = EmbeddingRequest(model=body.model, inputs=inputs_of(body.input), dimensions=body.dimensions,
                                         user=body.user)
    metadata = body.metadata or {}
    route = await pipeline.begin_embedding(call, embedding_request, model=body.model, **begin_options(
        request, run_id=metadata.get("run_id"), step=metadata.get("step")))

    async def complete():
        result = await pipeline.embed(call, route, embedding_request)
        headers = served_by_headers(call) | {"X-EP-Cost-USD": f"{call.cost:.8f}"}
        return json_response(embeddings_json(call, result, body.encoding_format), call.request_id, headers=headers)

    return await idempotency.idempotent(request, complete, on_error=lambda e: error_response(request, e))
