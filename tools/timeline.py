"""A workflow run's timeline: its model calls (Usage rows) and tool calls
(ToolCallLog rows) in the order they started, for the dashboard's run page.

Both tables record a row when its call ends (with its duration), so a call's
start is its row's time less its duration; the timeline sorts by that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from budgets.models import Usage
from tools.models import ToolCallLog

TIMELINE_LIMIT = 500  # entries shown; a longer run says how many more there are


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    kind: str  # "model" or "tool"
    started_at: datetime
    what: str  # provider/model, or server__tool
    status: str  # the row's status code (ok, error, refused, ...)
    status_label: str  # the same, as a person reads it
    error: str  # error code and message, if any
    duration_ms: int
    cost: Decimal | None  # model calls only
    request_id: str
    usage_id: int | None = None  # a model call's row, for its detail page
    persona: str = ""


def _model_entry(row: Usage) -> TimelineEntry:
    what = f"{row.provider}/{row.model}" if row.provider else "(no provider called)"
    error = f"{row.error_code}: {row.error_message}".strip(": ") if row.error_code else ""
    return TimelineEntry("model", row.created_at - timedelta(milliseconds=row.latency_ms), what, row.status,
                         row.get_status_display(), error, row.latency_ms, row.cost_usd, row.request_id, row.pk,
                         row.persona)


# ToolCallLog's own labels explain every reason a call is refused; a timeline row says why in its error.
TOOL_STATUS_LABELS = {"ok": "Answered", "error": "Tool error", "timeout": "Timed out", "refused": "Refused"}


def _tool_entry(row: ToolCallLog) -> TimelineEntry:
    error = f"{row.error_code}: {row.error_message}".strip(": ") if row.error_code else ""
    return TimelineEntry("tool", row.at - timedelta(milliseconds=row.duration_ms), f"{row.server}__{row.tool}",
                         row.status, TOOL_STATUS_LABELS.get(row.status, row.status), error, row.duration_ms, None, row.request_id,
                         None, row.persona)


def run_timeline(*, run_id: str, team_ids: set[int] | None) -> tuple[list[TimelineEntry], int]:
    """The run's entries in start order (at most TIMELINE_LIMIT), and how many it has in all.
    team_ids None means every team's rows; else only those teams'."""
    usage = Usage.objects.filter(run_id=run_id)
    tools = ToolCallLog.objects.filter(run_id=run_id)
    if team_ids is not None:
        usage, tools = usage.filter(team_id__in=team_ids), tools.filter(team_id__in=team_ids)
    total = usage.count() + tools.count()
    entries = [_model_entry(r) for r in usage.order_by("created_at", "id")[:TIMELINE_LIMIT]]
    entries += [_tool_entry(r) for r in tools.order_by("at", "id")[:TIMELINE_LIMIT]]
    entries.sort(key=lambda e: (e.started_at, e.kind != "model"))
    return entries[:TIMELINE_LIMIT], total
