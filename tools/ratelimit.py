"""Per-tool rate limits (Tool.rate_limit_per_minute), per team, shared by every
gateway process: fixed one-minute windows (UTC) in Redis when it is configured
(one Lua script checks and counts atomically, as budgets/ratelimit.py does),
else in the database (one conditional UPDATE, so two processes never both take
the last call of a window). A refused call is not counted.
"""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.db import IntegrityError, models, transaction
from redis.exceptions import RedisError

from budgets import shared_state as shared
from tools.models import ToolRateWindow

WINDOW = 60

_TAKE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class ToolRateLimitStoreDown(Exception):
    """Redis is unreachable: a limit that cannot be checked is not passed (as budgets/ratelimit.py)."""


async def tool_call_admit(*, tool_id: int, team_id: int, limit: int) -> tuple[bool, int]:
    """(admitted, seconds until the window resets); counts the call when admitted."""
    now = time.time()
    window = int(now // WINDOW)
    reset = max(1, int((window + 1) * WINDOW - now + 0.999))
    if limit <= 0:
        return False, reset
    if shared.redis_enabled():
        key = f"ep:rl:tool:{tool_id}:{team_id}:{window}"
        try:
            taken = int(await shared.async_redis().eval(_TAKE, 1, key, limit, WINDOW * 2))
        except RedisError:
            raise ToolRateLimitStoreDown() from None
    else:
        taken = await sync_to_async(_db_take, thread_sensitive=False)(tool_id, team_id, window, limit)
    return bool(taken), reset


def _db_take(tool_id: int, team_id: int, window: int, limit: int) -> bool:
    rows = ToolRateWindow.objects.filter(tool_id=tool_id, team_id=team_id, window=window, count__lt=limit)
    if rows.update(count=models.F("count") + 1):
        return True
    if ToolRateWindow.objects.filter(tool_id=tool_id, team_id=team_id, window=window).exists():
        return False  # the window is full
    try:
        with transaction.atomic():
            ToolRateWindow.objects.create(tool_id=tool_id, team_id=team_id, window=window, count=1)
    except IntegrityError:  # another process opened the window first: take a place in it
        return bool(rows.update(count=models.F("count") + 1))
    # A new window: drop the old ones of this tool and team (no sweeper needed).
    ToolRateWindow.objects.filter(tool_id=tool_id, team_id=team_id, window__lt=window - 1).delete()
    return True
