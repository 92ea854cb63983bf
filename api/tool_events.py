"""How streams show the server-side tool loop's progress (gateway/tool_loop.py).

OpenAI's chat completions SSE and Anthropic's messages SSE get SSE comment
lines, which every SSE parser skips (the spec: a line starting with ':' is a
comment), so the openai and anthropic SDKs read the stream as if they were not
there; a client that wants them reads the raw lines:

    : ep-tool {"type":"tool_started","run_id":...,"step":1,"call_id":...,"name":"builtin__current_time",...}

Custom `event:` names would not be safe: the openai SDK turns every event it
does not know into a chunk of the stream. The native SSE and the websocket
carry the same JSON as events of their own (`tool_started`, `tool_finished`);
the Responses API shows OpenAI's own mcp_call items and events
(api/openai_responses.py).
"""

from __future__ import annotations

import json

from gateway.tool_loop import ToolProgress, progress_json

COMMENT_PREFIX = b": ep-tool "


def sse_comment(progress: ToolProgress) -> bytes:
    return COMMENT_PREFIX + json.dumps(progress_json(progress), separators=(",", ":")).encode() + b"\n\n"
