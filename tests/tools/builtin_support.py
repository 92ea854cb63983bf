"""Calling built-in tools the way every caller does: through tools.registry.call_tool."""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async

from accounts.models import ApiKey
from accounts.snapshot import KeyInfo, load_key
from tools import registry
from tools.catalog import builtin_server
from tools.models import ToolGrant
from tools.types import ToolContext, ToolResult


async def granted_key(team, name: str = "agents") -> KeyInfo:
    """A new key of `team`, the team granted every built-in tool, the built-in server refreshed."""
    await builtin_server()
    await ToolGrant.objects.aupdate_or_create(team=team, defaults={"patterns": ["builtin__*"]})
    key, _ = await sync_to_async(ApiKey.issue)(team=team, name=name)
    return await sync_to_async(load_key)(key.key_hash)


async def call(key: KeyInfo, tool: str, arguments: dict | None = None, **context) -> ToolResult:
    return await registry.call_tool(f"builtin__{tool}", arguments or {}, ToolContext(key=key, **context))


def data(result: ToolResult):
    assert not result.is_error, result.content
    return json.loads(result.content)
