"""Reads of the tool-call log for the dashboard, scoped to the teams a user may see."""

from __future__ import annotations

from django.db.models import QuerySet

from tools.models import ToolCallLog

# The log's filters: query parameter -> the field it matches exactly.
CALL_FILTERS = {"server": "server", "tool": "tool", "status": "status", "source": "source", "persona": "persona",
                "run": "run_id"}


def tool_calls_visible(*, team_ids: set[int] | None) -> QuerySet[ToolCallLog]:
    rows = ToolCallLog.objects.select_related("team", "api_key")
    return rows if team_ids is None else rows.filter(team_id__in=team_ids)


def tool_calls_page(*, team_ids: set[int] | None, filters: dict[str, str], before: int | None = None,
                    size: int = 50) -> tuple[list[ToolCallLog], int | None]:
    """Newest first, `size` at a time (keyset on id: the log grows by every call, so no
    OFFSET and no count); the id to pass as `before` for the next page, or None at the end."""
    rows = tool_calls_visible(team_ids=team_ids).filter(
        **{CALL_FILTERS[name]: value for name, value in filters.items() if name in CALL_FILTERS and value})
    if before is not None:
        rows = rows.filter(id__lt=before)
    page = list(rows.order_by("-id")[: size + 1])
    return page[:size], (page[size - 1].id if len(page) > size else None)
