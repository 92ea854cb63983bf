"""search and get_document: the operator-uploaded documents of the caller's team, and shared ones."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async

from tools.search import documents_search, visible_documents
from tools.servers.builtin import builtin_tool
from tools.types import ToolContext, ToolError, ToolResult

MAX_CHARS = 50_000


@builtin_tool(
    "search",
    "Full-text search over the documents operators uploaded for this team (and shared ones): runbooks, "
    "conventions, designs. Returns the best matches with a snippet ([matched words] in brackets) and an id "
    "for get_document.",
    {"query": {"type": "string", "minLength": 1, "maxLength": 500, "description": "Words to look for."},
     "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5}},
    required=("query",),
)
async def search(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    hits = await sync_to_async(documents_search)(team_id=ctx.key.team_id, text=arguments["query"],
                                                 limit=arguments.get("limit", 5))
    results = [{"id": h.id, "title": h.title, "snippet": h.snippet, "rank": round(h.rank, 6)} for h in hits]
    return ToolResult(json.dumps({"results": results}, ensure_ascii=False), structured={"results": results})


@builtin_tool(
    "get_document",
    "The text of one document found with search, by its id; a long document is read in parts with offset.",
    {"id": {"type": "integer", "minimum": 1},
     "offset": {"type": "integer", "minimum": 0, "default": 0, "description": "Characters to skip."},
     "max_chars": {"type": "integer", "minimum": 1, "maximum": MAX_CHARS, "default": 20_000}},
    required=("id",),
)
async def get_document(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    document = await visible_documents(ctx.key.team_id).filter(id=arguments["id"]).afirst()
    if document is None:  # another team's document reads exactly like a missing one
        raise ToolError(f"There is no document {arguments['id']}.", code="not_found")
    offset, size = arguments.get("offset", 0), arguments.get("max_chars", 20_000)
    part = document.content[offset:offset + size]
    more = offset + size < len(document.content)
    data = {"id": document.id, "title": document.title, "offset": offset, "total_chars": len(document.content),
            "next_offset": offset + size if more else None, "text": part}
    return ToolResult(json.dumps(data, ensure_ascii=False), structured=data)
