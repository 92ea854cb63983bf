"""The tool-call log page (/dashboard/tools/calls/): a team lead sees their teams'
tool calls only, filters narrow them, and older calls come page by page."""

import pytest

from tests.dashboard.conftest import client_for
from tools.models import ToolCallLog
from tools.selectors import tool_calls_page

pytestmark = pytest.mark.django_db


def _call(team, **fields) -> ToolCallLog:
    values = {"server": "builtin", "tool": "current_time", "status": "ok", "source": "loop", "duration_ms": 3,
              "bytes_in": 2, "bytes_out": 25} | fields
    return ToolCallLog.objects.create(team=team, **values)


def test_a_lead_sees_their_teams_calls_and_nobody_elses(people, world):
    _call(world.red, tool="run_cost", run_id="run-red-1", persona="architect")
    _call(world.blue, tool="search", status="refused", error_code="unknown_tool")
    page = client_for(people.rita).get("/dashboard/tools/calls/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-tool="builtin__run_cost"' in html and "/dashboard/runs/run-red-1/" in html
    assert "builtin__search" not in html
    everything = client_for(people.olive).get("/dashboard/tools/calls/").content.decode()  # an operator: all teams
    assert "builtin__search" in everything and "unknown_tool" in everything


def test_filters_narrow_the_log(people, world):
    _call(world.red, tool="run_cost")
    _call(world.red, server="github", tool="search_issues", status="timeout", error_code="tool_timeout")
    html = client_for(people.rita).get("/dashboard/tools/calls/", {"status": "timeout"}).content.decode()
    assert "github__search_issues" in html and "builtin__run_cost" not in html
    html = client_for(people.rita).get("/dashboard/tools/calls/", {"server": "builtin"}).content.decode()
    assert "builtin__run_cost" in html and "github__search_issues" not in html


def test_older_calls_come_a_page_at_a_time_without_repeats(people, world):
    made = [_call(world.red, tool=f"t{i}") for i in range(5)]
    first, after = tool_calls_page(team_ids={world.red.id}, filters={}, size=2)
    second, after2 = tool_calls_page(team_ids={world.red.id}, filters={}, before=after, size=2)
    third, end = tool_calls_page(team_ids={world.red.id}, filters={}, before=after2, size=2)
    assert [c.id for c in first + second + third] == [c.id for c in reversed(made)] and end is None
    html = client_for(people.rita).get("/dashboard/tools/calls/", {"before": made[2].id}).content.decode()
    assert 'data-tool="builtin__t1"' in html and 'data-tool="builtin__t2"' not in html
