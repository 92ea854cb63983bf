"""The usage log on a long ledger: keyset paging (`before=<id>`, never an
OFFSET) and a capped count, through Django's test client."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from budgets.models import Usage
from dashboard.costs import COUNT_CAP, PAGE_ROWS
from tests.dashboard.conftest import client_for

pytestmark = pytest.mark.django_db


def rows(world, n: int, *, same_moment: bool = False, **fields) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    Usage.objects.bulk_create([
        Usage(request_id=f"req_{i:05d}", team=world.red, persona="architect", endpoint="v1.chat.completions",
              created_at=start if same_moment else start + timedelta(seconds=i), **fields) for i in range(n)])


def older_link(html: str) -> str | None:
    found = re.search(r'href="\?([^"]*before=\d+)">Older', html)
    return found.group(1).replace("&amp;", "&") if found else None


@pytest.mark.parametrize("same_moment", [False, True])
def test_older_pages_continue_from_the_last_row_without_gaps_or_repeats(world, people, same_moment):
    rows(world, 2 * PAGE_ROWS + 7, same_moment=same_moment)
    olive = client_for(people.olive)
    seen, query, pages = [], "persona=architect", 0
    while query is not None:
        response = olive.get(reverse("budgets:usage") + "?" + query)
        page = [u.request_id for u in response.context["rows"]]
        assert len(page) == (PAGE_ROWS if pages < 2 else 7)
        seen += page
        query = older_link(response.content.decode())
        assert query is None or "persona=architect" in query  # the filters stay
        pages += 1
    assert pages == 3
    assert seen == sorted(seen, reverse=True) == [f"req_{i:05d}" for i in range(2 * PAGE_ROWS + 6, -1, -1)]


def test_the_count_stops_at_its_cap(world, people):
    rows(world, COUNT_CAP + 1)
    olive = client_for(people.olive)
    html = olive.get(reverse("budgets:usage")).content.decode()
    assert f"More than {COUNT_CAP:,} requests match." in html
    html = olive.get(reverse("budgets:usage") + "?persona=nobody").content.decode()
    assert "0 requests match." in html and "No requests match these filters." in html


def test_a_before_row_of_another_team_shows_nothing_of_it(world, people):
    rows(world, 3)
    blue_row = Usage.objects.create(request_id="req_blue", team=world.blue, created_at=datetime(2026, 11, 2, tzinfo=UTC))
    rita = client_for(people.rita)  # lead of red
    response = rita.get(reverse("budgets:usage") + f"?before={blue_row.pk}")
    assert [u.request_id for u in response.context["rows"]] == ["req_00002", "req_00001", "req_00000"]
