"""`/v1/files` in OpenAI's shape, for batch jobs: upload an input file
(purpose "batch"), list, retrieve, download the content, delete. Output and
error files of finished batches are listed here too (purpose "batch_output").

Files belong to the caller's team (gateway/batches.py): another team's file
is the same 404 as one that does not exist. An upload is checked line by line
(api/batch_lines.py) before it is stored, so a bad request line is refused
at once, naming the line, rather than failing a batch later.
"""

from __future__ import annotations

import re
from typing import Literal

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import File, Form, Query, Router, Schema, UploadedFile

from api.auth import ApiKeyAuth
from api.batch_lines import lines_parse
from api.errors import KEYED, error_responses
from api.responses import json_response
from gateway.batches import file_create, file_delete, file_get, files_list, missing
from gateway.call import Call
from gateway.errors import InvalidRequest, NotFound
from gateway.models import BatchFile

router = Router(tags=["OpenAI compatible"], auth=ApiKeyAuth())


def _thread(function):
    return sync_to_async(function, thread_sensitive=False)


def file_json(file: BatchFile) -> dict:
    return {"id": file.id, "object": "file", "bytes": file.bytes, "created_at": int(file.created_at.timestamp()),
            "filename": file.filename, "purpose": file.purpose, "status": "processed", "status_details": None,
            "expires_at": None}


async def team_file(call: Call, file_id: str, *, param: str = "file_id", with_content: bool = False) -> BatchFile:
    """The caller's team's file, else a 404 (also for another team's)."""
    found = await _thread(file_get)(team_id=call.key.team_id, file_id=file_id, with_content=with_content)
    if found is None:
        raise NotFound(missing("file", file_id), code="file_not_found", param=param)
    return found


@router.post("/files", summary="Upload a file (OpenAI Files API; purpose \"batch\")",
             response={200: dict, **error_responses(*KEYED, 413)})
async def upload_file(request: HttpRequest, file: File[UploadedFile], purpose: Form[str]):
    call: Call = request.ep_call
    call.endpoint = "files.create"
    if purpose != "batch":
        raise InvalidRequest(f"purpose '{purpose}' is not supported: this gateway keeps files for batch jobs "
                             "only (purpose \"batch\").", code="unsupported_purpose", param="purpose")
    content = file.read()
    await _thread(lines_parse)(content)  # refuses the file, naming the first bad line (off the event loop)
    stored = await _thread(file_create)(team_id=call.key.team_id, filename=_safe_filename(file.name),
                                        purpose=purpose, content=content.decode())
    return json_response(file_json(stored), call.request_id)


def _safe_filename(name: str | None) -> str:
    # The name goes back out in a Content-Disposition header: plain characters only.
    return re.sub(r"[^\w.\- ]", "_", name or "", flags=re.ASCII)[:200] or "batch.jsonl"


class FilesQuery(Schema):
    purpose: str | None = None
    limit: int = 10000
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None


@router.get("/files", summary="List files", response={200: dict, **error_responses(*KEYED)})
async def list_files(request: HttpRequest, query: Query[FilesQuery]):
    call: Call = request.ep_call
    call.endpoint = "files.list"
    if not 1 <= query.limit <= 10000:
        raise InvalidRequest("limit must be between 1 and 10000.", param="limit")
    page = await _thread(files_list)(team_id=call.key.team_id, purpose=query.purpose, after=query.after,
                                     limit=query.limit + 1, order=query.order)
    data = [file_json(f) for f in page[: query.limit]]
    body = {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(page) > query.limit}
    return json_response(body, call.request_id)


@router.get("/files/{file_id}", summary="Retrieve a file", response={200: dict, **error_responses(*KEYED, 404)})
async def retrieve_file(request: HttpRequest, file_id: str):
    call: Call = request.ep_call
    call.endpoint = "files.retrieve"
    return json_response(file_json(await team_file(call, file_id)), call.request_id)


@router.get("/files/{file_id}/content", summary="Download a file's content",
            response={200: str, **error_responses(*KEYED, 404)},
            openapi_extra={"responses": {200: {"description": "The file as it was uploaded or written (JSONL).",
                                               "content": {"application/jsonl": {"schema": {"type": "string"}}}}}})
async def file_content(request: HttpRequest, file_id: str):
    call: Call = request.ep_call
    call.endpoint = "files.content"
    found = await team_file(call, file_id, with_content=True)
    response = HttpResponse(found.content.encode(), content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{found.filename}"'
    response["X-Request-ID"] = call.request_id
    return response


@router.delete("/files/{file_id}", summary="Delete a file", response={200: dict, **error_responses(*KEYED, 404)})
async def delete_file(request: HttpRequest, file_id: str):
    call: Call = request.ep_call
    call.endpoint = "files.delete"
    if not await _thread(file_delete)(team_id=call.key.team_id, file_id=file_id):
        raise NotFound(missing("file", file_id), code="file_not_found", param="file_id")
    return json_response({"id": file_id, "object": "file", "deleted": True}, call.request_id)
