"""ask_persona's way back into the gateway: one persona consults another.

The built-in `ask_persona` tool (tools/servers/builtin.py) lives below the
gateway and cannot import it; whoever runs tools (the server-side loop, /mcp)
puts `asker(...)` on the ToolContext. Each question is one request through the
same pipeline as any other: its own Call and Usage row (endpoint
`tool.ask_persona`), reserved against the caller's budgets, tagged with the
run it belongs to.
"""

from __future__ import annotations

import logging

from accounts.snapshot import KeyInfo
from gateway.call import Call, new_request_id
from gateway.errors import GatewayError
from gateway.pipeline import admit, begin, complete
from gateway.recording import usage_record
from providers.types import ChatRequest, Message
from tools.types import AskPersona, ToolError

log = logging.getLogger("gateway.tool_asks")

ENDPOINT = "tool.ask_persona"
# A persona asking a persona asking ...: deeper than this is refused (it is a loop).
MAX_DEPTH = 3


class AskFailed(ToolError):
    """The consulted persona gave no answer; the message is safe to show the model."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="ask_failed")


async def ask(key: KeyInfo, *, persona: str, question: str, run_id: str, step: str = "") -> str:
    """One non-streamed question to `persona`, billed to `key`; its answer's text."""
    call = Call(request_id=new_request_id(), endpoint=ENDPOINT, key=key)
    request = ChatRequest(model="", messages=[Message(role="user", content=question)])
    try:
        route = await begin(call, request, model=persona, run_id=run_id, step=step)
        await admit(call, route, request)
        result = await complete(call, route, request)
    except GatewayError as error:
        call.fail(error)
        raise AskFailed(f"{persona} did not answer: {error.message}") from None
    finally:
        await usage_record(call)
    return result.content or ""


def asker(key: KeyInfo, *, run_id: str, depth: int = 0) -> AskPersona | None:
    """The ToolContext.ask for a caller; None once questions have nested MAX_DEPTH deep."""
    if depth >= MAX_DEPTH:
        return None

    async def ask_for(persona: str, question: str) -> str:
        return await ask(key, persona=persona, question=question, run_id=run_id, step=f"ask:{persona}"[:100])

    return ask_for
