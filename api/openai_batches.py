"""`/v1/batches` in OpenAI's shape: create a batch from an uploaded input file,
retrieve it, list them, cancel one. The requests are run by the batch worker
(`manage.py run_batches`, gateway/batch_worker.py) through the same pipeline
as live calls, each with its own Usage row tagged with the batch (run_id =
the batch id, step = the request's custom_id); its answers land in the
batch's output file, its failures in the error file (`/v1/files/{id}/content`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import ConfigDict

from api.auth import ApiKeyAuth
from api.batch_lines import VALIDATORS, lines_parse
from api.errors import KEYED, error_responses
from api.openai_files import team_file
from api.responses import json_response
from gateway.batches import (
    BatchLine,
    batch_cancel,
    batch_create,
    batch_get,
    batches_list,
    batches_usage,
    missing,
    request_counts,
)
from gateway.call import Call
from gateway.errors import InvalidRequest, NotFound
from gateway.models import Batch

router = Router(tags=["OpenAI compatible"], auth=ApiKeyAuth())

TIMESTAMPS = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
              "expired_at", "cancelling_at", "cancelled_at")


def _thread(function):
    return sync_to_async(function, thread_sensitive=False)


def _epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value else None


def batch_json(batch: Batch, counts: dict[str, int], usage: dict) -> dict:
    errors = {"object": "list", "data": batch.errors} if batch.errors else None
    return {
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": errors,
        "input_file_id": batch.input_file_id, "completion_window": batch.completion_window,
        "status": batch.status, "output_file_id": batch.output_file_id or None,
        "error_file_id": batch.error_file_id or None,
        **{name: _epoch(getattr(batch, name)) for name in TIMESTAMPS},
        "request_counts": counts, "usage": usage, "metadata": batch.metadata,
    }


def _summaries(batches: list[Batch]) -> list[dict]:
    ids = [b.id for b in batches]
    counts, usage = request_counts(ids), batches_usage(ids)
    return [batch_json(b, counts[b.id], usage[b.id]) for b in batches]


async def _render(batch: Batch, request_id: str):
    [body] = await _thread(_summaries)([batch])
    return json_response(body, request_id)


class BatchIn(Schema):
    model_config = ConfigDict(extra="ignore")  # output_expires_after and newer fields: accepted, not used

    input_file_id: str = Field(..., min_length=1, max_length=64)
    endpoint: str = Field(..., max_length=100)
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


def _mismatched(lines: list[BatchLine], endpoint: str) -> list[dict]:
    """OpenAI's validation errors for lines whose url is not the batch's endpoint."""
    return [{"code": "mismatched_url", "line": line.line, "param": "url",
             "message": f"This line's url is {line.url}, but the batch's endpoint is {endpoint}; every request "
                        "of a batch goes to its endpoint."} for line in lines if line.url != endpoint]


@router.post("/batches", summary="Create a batch (OpenAI Batch API)",
             response={200: dict, **error_responses(*KEYED, 404)})
async def create_batch(request: HttpRequest, body: BatchIn):
    call: Call = request.ep_call
    call.endpoint = "batches.create"
    if body.endpoint not in VALIDATORS:
        raise InvalidRequest(f"endpoint '{body.endpoint}' is not supported for batches; use one of "
                             f"{', '.join(VALIDATORS)}.", code="unsupported_endpoint", param="endpoint")
    if body.completion_window != "24h":
        raise InvalidRequest("completion_window must be \"24h\".", param="completion_window")
    if body.metadata is not None and (len(body.metadata) > 16 or any(
            len(k) > 64 or len(v) > 512 or "\x00" in k + v for k, v in body.metadata.items())):
        raise InvalidRequest("metadata holds at most 16 pairs, keys of at most 64 and values of at most 512 "
                             "characters, none of them NUL.", param="metadata")
    input_file = await team_file(call, body.input_file_id, param="input_file_id", with_content=True)
    if input_file.purpose != "batch":
        raise InvalidRequest(f"File '{input_file.id}' has purpose '{input_file.purpose}'; a batch's input file "
                             "is uploaded with purpose \"batch\".", code="invalid_input_file", param="input_file_id")
    # Checked at upload; checked again against today's rules (off the event loop: a file may be large).
    lines = await _thread(lines_parse)(input_file.content.encode())
    batch = await _thread(batch_create)(team_id=call.key.team_id, api_key_id=call.key.id,
                                        input_file_id=input_file.id, endpoint=body.endpoint, lines=lines,
                                        errors=_mismatched(lines, body.endpoint), metadata=body.metadata)
    return await _render(batch, call.request_id)


async def _team_batch(call: Call, batch_id: str) -> Batch:
    found = await _thread(batch_get)(team_id=call.key.team_id, batch_id=batch_id)
    if found is None:
        raise NotFound(missing("batch", batch_id), code="batch_not_found", param="batch_id")
    return found


@router.get("/batches/{batch_id}", summary="Retrieve a batch", response={200: dict, **error_responses(*KEYED, 404)})
async def retrieve_batch(request: HttpRequest, batch_id: str):
    call: Call = request.ep_call
    call.endpoint = "batches.retrieve"
    return await _render(await _team_batch(call, batch_id), call.request_id)


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch",
             response={200: dict, **error_responses(*KEYED, 404)})
async def cancel_batch(request: HttpRequest, batch_id: str):
    call: Call = request.ep_call
    call.endpoint = "batches.cancel"
    batch = await _thread(batch_cancel)(team_id=call.key.team_id, batch_id=batch_id)
    if batch is None:
        raise NotFound(missing("batch", batch_id), code="batch_not_found", param="batch_id")
    return await _render(batch, call.request_id)


class BatchesQuery(Schema):
    limit: int = 20
    after: str | None = None


@router.get("/batches", summary="List batches", response={200: dict, **error_responses(*KEYED)})
async def list_batches(request: HttpRequest, query: Query[BatchesQuery]):
    call: Call = request.ep_call
    call.endpoint = "batches.list"
    if not 1 <= query.limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100.", param="limit")
    page = await _thread(batches_list)(team_id=call.key.team_id, after=query.after, limit=query.limit + 1)
    data: list[dict[str, Any]] = await _thread(_summaries)(page[: query.limit])
    body = {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(page) > query.limit}
    return json_response(body, call.request_id)
