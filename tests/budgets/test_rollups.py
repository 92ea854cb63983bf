"""The ledger's daily rollups (budgets/rollups.py): every cost view adds up the
same before and after a day is rolled up, after late rows, and after the raw
rows are pruned (EP_USAGE_RETENTION_DAYS); on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from budgets import rollups, selectors, trends
from budgets.models import Budget, BudgetCounter, RolledDay, Usage, UsageDaily, UsageRun, UsageRunDaily
from budgets.verify import ledger_verify

pytestmark = pytest.mark.django_db

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def row(team, at: datetime, cost: str = "0", **fields) -> Usage:
    values = {"request_id": f"req_{Usage.objects.count()}", "team": team, "persona": "architect",
              "provider": "demo", "model": "demo", "endpoint": "v1.chat.completions", "attempts": 1,
              "input_tokens": 10, "output_tokens": 5, "cost_usd": Decimal(cost), "created_at": at}
    return Usage.objects.create(**values | fields)


@pytest.fixture
def ledger(world):
    """Rows either side of two midnights, refused, cache hits, prompt caching,
    runs, a key, calls that are no model calls, and today's."""
    from accounts.models import ApiKey

    key = ApiKey.objects.get(name="red agents")
    for days_ago in (3, 2):
        midnight = TODAY - timedelta(days=days_ago)
        row(world.red, midnight - timedelta(microseconds=1), "1.25", run_id="run-a", step="plan", api_key=key)
        row(world.red, midnight, "0.50", run_id="run-a", step="code", persona="developer")
        row(world.blue, midnight + timedelta(hours=23, minutes=59, seconds=59), "2.00000001", model="other",
            provider="openai")
        row(world.blue, midnight + timedelta(hours=5), status="refused", attempts=0, provider="", model="",
            input_tokens=0, output_tokens=0, http_status=429, error_code="budget_exceeded")
        row(world.red, midnight + timedelta(hours=6), cache_hit=True, saved_usd=Decimal("0.75"), attempts=0)
        row(world.red, midnight + timedelta(hours=7), "0.10", cached_tokens=8, saved_usd=Decimal("0.02"))
        row(world.red, midnight + timedelta(hours=8), status="error", attempts=2, endpoint="api.v1.chat")
        row(world.blue, midnight + timedelta(hours=9), endpoint="v1.models", attempts=0, persona="", provider="",
            model="", input_tokens=0, output_tokens=0)
    row(world.red, TODAY + timedelta(minutes=1), "3.00", run_id="run-b")
    return world


def views(world) -> dict:
    """What every cost view says: the costs page's reads, /costs's, budgets'."""
    since = TODAY - timedelta(days=6)
    spend = selectors.spend_over(team_ids=None, since=since)
    red_only = selectors.spend_over(team_ids={world.red.pk}, since=since)
    return {
        "total": spend.total(), "red total": red_only.total(),
        **{f"by {d}": spend.by(d) for d in ("team", "persona", "provider", "model", "key")},
        "by run": selectors.spend_by(dimension="run", team_ids=None, since=since),
        "savings": spend.savings(), "savings by persona": spend.savings("persona"),
        "days": selectors.spend_per_day(team_ids=None, days=7),
        "stacked": trends.spend_stacked(dimension="team", team_ids=None, days=7).series,
        "lifetime": rollups.cost_sum(since=None), "red lifetime": rollups.cost_sum(since=None, where=_red(world)),
        "edges": selectors.spend_total(team_ids=None, since=TODAY - timedelta(days=3, hours=1),
                                       until=TODAY - timedelta(days=1, hours=1)),
    }


def _red(world):
    from django.db.models import Q

    return Q(team_id=world.red.pk)


def test_every_cost_view_adds_up_the_same_from_the_rollups(ledger):
    before = views(ledger)
    call_command("ledger_rollup", stdout=open("/dev/null", "w"))
    assert set(RolledDay.objects.values_list("day", flat=True)) >= {(TODAY - timedelta(days=d)).date()
                                                                     for d in (2, 3, 4)}
    assert not RolledDay.objects.filter(day=TODAY.date()).exists()  # today is read from the ledger
    assert UsageDaily.objects.exists() and UsageRunDaily.objects.filter(run_id="run-a").exists()
    assert views(ledger) == before
    assert before["total"] == Decimal("3.00") + 2 * Decimal("3.85000001")
    assert rollups.rollups_verify() == []


def test_the_rollups_are_read_not_the_ledger_for_a_rolled_day(ledger):
    call_command("ledger_rollup", stdout=open("/dev/null", "w"))
    day = (TODAY - timedelta(days=2)).date()
    UsageDaily.objects.filter(day=day, team_id=ledger.blue.pk, model="other").update(cost_usd=Decimal("100"))
    assert selectors.spend_total(team_ids={ledger.blue.pk}, since=TODAY - timedelta(days=2),
                                 until=TODAY - timedelta(days=1)) == Decimal("100")
    problems = rollups.rollups_verify()
    assert problems and problems[0][0] == day and "the ledger says" in problems[0][1]


def test_a_late_row_in_a_rolled_day_is_rolled_up_by_the_next_sweep(ledger):
    call_command("ledger_rollup", stdout=open("/dev/null", "w"))
    since, until = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
    before = selectors.spend_total(team_ids=None, since=since, until=until)
    row(ledger.red, since + timedelta(hours=12), "4.00")  # a spooled settlement replayed late
    assert rollups.rollups_verify() != []
    assert rollups.rollups_sweep() == [since.date()]
    assert selectors.spend_total(team_ids=None, since=since, until=until) == before + Decimal("4.00")
    assert rollups.rollups_verify() == []


def test_ledger_verify_reports_a_rollup_that_differs_and_fix_rolls_it_up_again(ledger, capsys):
    call_command("ledger_rollup")
    UsageRunDaily.objects.filter(run_id="run-a").delete()
    with pytest.raises(CommandError, match="rollup day"):
        call_command("ledger_verify")
    assert "DRIFT rollup" in capsys.readouterr().out
    call_command("ledger_verify", "--fix")
    call_command("ledger_verify")
    assert "every rolled day whose rows are kept equals the ledger" in capsys.readouterr().out


def test_a_day_is_rolled_up_only_after_its_grace(ledger, settings):
    settings.EP_ROLLUP_GRACE_SECONDS = 3600
    rolled = rollups.rollups_sweep(now=TODAY + timedelta(minutes=30), limit=None)
    assert (TODAY - timedelta(days=1)).date() not in rolled  # yesterday's streams may still settle
    assert (TODAY - timedelta(days=2)).date() in rolled


@pytest.mark.django_db(transaction=True)  # ledger_verify reads in a snapshot transaction of its own
def test_pruning_keeps_the_costs_page_and_budget_counters_whole(ledger, admin_client):
    budget = Budget.objects.create(name="red forever", scope="team", team=ledger.red, period="lifetime",
                                   limit_usd=Decimal(1000))
    BudgetCounter.objects.create(budget=budget, period_start=datetime(1970, 1, 1, tzinfo=UTC),
                                 spent=rollups.cost_sum(since=None, where=_red(ledger)))
    page_before = admin_client.get(reverse("budgets:costs") + "?days=7")
    before = views(ledger)
    rows_before = Usage.objects.count()

    call_command("ledger_prune", "--days", "1", stdout=open("/dev/null", "w"))

    assert Usage.objects.filter(created_at__lt=TODAY - timedelta(days=1)).count() == 0
    assert Usage.objects.count() < rows_before and Usage.objects.filter(created_at__gte=TODAY).exists()
    assert RolledDay.objects.filter(pruned=True).count() >= 2
    # A range that starts inside a pruned day reads what is left of its rows:
    # none. Whole days (every page's ranges) come from the rollups.
    after = views(ledger)
    assert after.pop("edges") < before.pop("edges")
    assert after == before
    page_after = admin_client.get(reverse("budgets:costs") + "?days=7")
    for name in ("total", "previous_total", "breakdowns", "top_keys", "savings", "savings_by"):
        assert page_after.context[name] == page_before.context[name], name
    assert page_after.context["total"] == Decimal("10.70000002")
    assert ledger_verify().drifts == []  # the lifetime counter still equals the ledger, pruned days included


def test_pruning_needs_a_retention(ledger, settings):
    settings.EP_USAGE_RETENTION_DAYS = 0
    with pytest.raises(CommandError, match="No retention"):
        call_command("ledger_prune")
    assert rollups.days_prune() == (0, 0)


def test_the_sweeper_prunes_with_the_retention_setting(ledger, settings):
    settings.EP_USAGE_RETENTION_DAYS = 2
    total = rollups.cost_sum(since=None)
    rollups.rollups_sweep(limit=None)
    assert not Usage.objects.filter(created_at__lt=TODAY - timedelta(days=2)).exists()
    assert Usage.objects.filter(created_at__gte=TODAY - timedelta(days=2)).exists()
    assert rollups.cost_sum(since=None) == total


def test_a_page_read_before_any_rollup_reads_the_ledger_only(ledger):
    assert not RolledDay.objects.exists()
    part = rollups.split(TODAY - timedelta(days=5), None)
    assert part.days == [] and Usage.objects.filter(part.raw).count() == Usage.objects.filter(
        created_at__gte=TODAY - timedelta(days=5)).count()


def test_the_sweeper_rolls_up_when_due(ledger, settings):
    from budgets import sweeper

    settings.EP_ROLLUP_SECONDS = 300
    sweeper._rolled_at = None  # this process has not rolled up yet (however long since boot)
    sweeper._roll_up()  # _sweep's last step (its first, close_old_connections, would end the test's connection)
    assert RolledDay.objects.filter(day=(TODAY - timedelta(days=2)).date()).exists()
    RolledDay.objects.all().delete()
    sweeper._roll_up()  # within EP_ROLLUP_SECONDS of the last: nothing
    assert not RolledDay.objects.exists()


def test_the_costliest_runs_count_todays_rows_of_runs_the_rollups_rank_low(world):
    for days_ago, run_id, cost in ((2, "run-big-before", "5"), (2, "run-late", "1"), (1, "run-late", "1"),
                                   (2, "run-small", "2")):
        row(world.red, TODAY - timedelta(days=days_ago, hours=-3), cost, run_id=run_id)
    call_command("ledger_rollup", stdout=open("/dev/null", "w"))
    row(world.red, TODAY + timedelta(minutes=5), "4", run_id="run-late")  # today: from the ledger
    since = TODAY - timedelta(days=6)
    top = selectors.spend_by(dimension="run", team_ids=None, since=since, limit=2)
    assert [(r["label"], r["cost"]) for r in top] == [("run-late", Decimal("6")), ("run-big-before", Decimal("5"))]
    assert top == selectors.spend_by(dimension="run", team_ids=None, since=since)[:2]


def test_a_late_row_days_back_is_found_by_its_id_not_only_by_recounting(ledger):
    rollups.rollups_sweep(now=TODAY + timedelta(hours=12), limit=None)  # yesterday too, whatever the hour
    old_day = TODAY - timedelta(days=4)  # the ledger's first day, past the recount's last three
    assert old_day.date() not in [r.day for r in RolledDay.objects.order_by("-day")[:rollups.RECHECK_DAYS]]
    row(ledger.blue, old_day + timedelta(hours=1), "7.00")  # a spool replayed after days of outage
    assert rollups.days_with_late_rows() == [old_day.date()]
    rollups.rollups_sweep()
    assert rollups.rollups_verify() == []
    assert rollups.days_with_late_rows() == []


@pytest.mark.django_db(transaction=True)  # the API's key lookup runs in a thread of its own
def test_get_costs_answers_the_same_from_the_rollups_and_lists_the_costliest_runs(ledger, client):
    """GET /costs reads one rollup by day and group for its groups, totals and
    series, and by run lists the costliest `limit` (100 unless asked) with theirs."""
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ledger.admin_key}"}
    start = (TODAY - timedelta(days=6)).date().isoformat()

    def answers(**params) -> dict:
        return {by: client.get("/costs", {"group_by": by, "start": start, **params}, **auth).json()
                for by in ("team", "persona", "provider", "model", "key", "run")}

    before = answers()
    call_command("ledger_rollup", stdout=open("/dev/null", "w"))
    assert answers() == before
    for by, body in before.items():
        assert body["has_more"] is False
        assert sum(Decimal(g["cost_usd"]) for g in body["groups"]) == Decimal(body["total_cost_usd"]), by
        assert sum(Decimal(d["cost_usd"]) for d in body["daily"]) == Decimal(body["total_cost_usd"]), by
    runs = before["run"]
    assert [(g["group"], g["cost_usd"]) for g in runs["groups"]] == [
        ("(none)", "4.20000002"), ("run-a", "3.50000000"), ("run-b", "3.00000000")]
    top = client.get("/costs", {"group_by": "run", "start": start, "limit": 2}, **auth).json()
    assert [g["group"] for g in top["groups"]] == ["(none)", "run-a"] and top["has_more"] is True
    assert {d["group"] for d in top["daily"]} == {"(none)", "run-a"}
    assert top["total_cost_usd"] == runs["total_cost_usd"]  # the totals are the range's, not the listed runs'
    one_model = client.get("/costs", {"group_by": "model", "start": start, "limit": 1}, **auth).json()
    assert [g["group"] for g in one_model["groups"]] == ["demo"] and one_model["has_more"] is True
    refused = client.get("/costs", {"group_by": "run", "limit": 0}, **auth)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "limit"


def test_the_costliest_runs_walk_finds_what_summing_every_run_finds(ledger):
    """rollups.top_runs walks runs by their cost over every rolled day and stops
    early: the same runs, sums and order as summing every run of the range, for
    a run mostly outside the range, one whose id two teams used, a team's view."""
    for i in range(40):
        team = ledger.red if i % 3 else ledger.blue
        row(team, TODAY - timedelta(days=1 + i % 6, hours=3), f"{0.11 * i + 0.01:.2f}", run_id=f"r{i:02d}")
    row(ledger.red, TODAY - timedelta(days=9), "50", run_id="long")  # costly, but before most ranges
    row(ledger.red, TODAY - timedelta(days=1, hours=2), "0.07", run_id="long")
    row(ledger.red, TODAY - timedelta(days=2, hours=2), "2.5", run_id="shared")
    row(ledger.blue, TODAY - timedelta(days=3, hours=2), "2.5", run_id="shared")
    row(ledger.blue, TODAY + timedelta(minutes=5), "0.9", run_id="r05")  # today: from the ledger
    call_command("ledger_rollup", stdout=open("/dev/null", "w"))
    assert UsageRun.objects.get(run_id="shared").team_id is None
    assert UsageRun.objects.get(run_id="long").cost_usd == Decimal("50.07")
    for since, until in ((TODAY - timedelta(days=3), None), (TODAY - timedelta(days=6), TODAY - timedelta(days=1)),
                         (TODAY - timedelta(days=30), None), (None, None)):
        for teams in (None, {ledger.red.pk}, {ledger.blue.pk}):
            every = selectors.spend_by(dimension="run", team_ids=teams, since=since, until=until)
            for limit in (1, 3, 10, 100):
                assert selectors.spend_by(dimension="run", team_ids=teams, since=since, until=until,
                                          limit=limit) == every[:limit], (since, until, teams, limit)
                for batch in (1, 2, 5):  # a walk of several steps, stopped early
                    top = rollups.top_runs(team_ids=teams, since=since, until=until, limit=limit, batch=batch)
                    ranked = sorted(top.items(), key=lambda item: (-item[1]["cost"], item[0][0] or "(none)"))
                    assert [(run or "(none)", sums["cost"]) for (run,), sums in ranked[:limit]] == [
                        (r["label"], r["cost"]) for r in every[:limit]], (since, until, teams, limit, batch)
    assert rollups.rollups_verify() == []
    UsageRun.objects.filter(run_id="shared").update(cost_usd=Decimal("1"))
    assert any("run shared" in words for _, words in rollups.rollups_verify())


def test_shared_ledger_reads_read_todays_rows_once_and_add_up_the_same(ledger):
    """The costs page's breakdowns and chart share one read of the ledger's part
    of their range (today's rows) inside rollups.ledger_reads_shared."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call_command("ledger_rollup", stdout=open("/dev/null", "w"))
    since = TODAY - timedelta(days=6)

    def read() -> tuple:
        return (selectors.spend_over(team_ids=None, since=since).cells,
                trends.spend_stacked(dimension="team", team_ids=None, days=7).series,
                trends.spend_stacked(dimension="model", team_ids={ledger.red.pk}, days=7).series,
                selectors.cost_by(dimension="persona", team_ids=None, since=since))

    alone = read()
    with rollups.ledger_reads_shared(), CaptureQueriesContext(connection) as queries:
        shared = read()
    assert shared == alone
    ledger_reads = [q["sql"] for q in queries.captured_queries if 'FROM "budgets_usage" ' in q["sql"]]
    assert len(ledger_reads) == 2  # every read of all teams, then red's alone
