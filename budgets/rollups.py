"""The ledger's daily rollups: written for closed days, read with the ledger.

A year of a busy team is ten million Usage rows, and adding them up for the
costs pages took seconds (docs/PERFORMANCE.md, "The ledger at scale"). So each
UTC day, once closed, is rolled up into UsageDaily (by team, key, persona,
provider, model, status) and UsageRunDaily (by team and run), and its RolledDay
row says so. Readers split any time range: rolled days from the rollups, every
other moment (today, yesterday within the grace, a range's partial edges) from
the ledger itself. Nothing on the request path writes a rollup: the ledger
writer's batches are untouched (its exactness, counters == ledger).

Kept in step by the sweeper (`rollups_sweep`): a day is rolled
EP_ROLLUP_GRACE_SECONDS after it ends, the last RECHECK_DAYS rolled days are
counted again and re-rolled if a late row came (a spooled settlement replayed),
and with EP_USAGE_RETENTION_DAYS the raw rows of old rolled days are deleted
(`days_prune`). `rollups_verify` proves rollups == ledger for every day whose
rows are still there.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from budgets import ledger_store as store
from budgets.models import RolledDay, Usage, UsageDaily, UsageRun, UsageRunDaily

# The Usage rows' endpoint names (api/auth.py: the path, dotted) of the calls
# that ask a model for something. Listing models, reading costs or runs, the
# health and capability pages are calls too, each with its $0 row, but the cost
# views count what was asked of models; the usage log shows every row.
MODEL_ENDPOINTS = ("v1.chat.completions", "v1.completions", "v1.embeddings", "v1.messages", "v1.responses",
                   "api.v1.chat", "ws.chat", "dashboard.playground")
# A model call whatever its endpoint: a provider was called, or it cost money
# (so no spend can ever fall out of a cost view).
MODEL_CALL = Q(endpoint__in=MODEL_ENDPOINTS) | Q(attempts__gt=0) | ~Q(cost_usd=0)

RECHECK_DAYS = 3  # rolled days counted again for late rows, each rollup sweep
DAYS_PER_SWEEP = 7  # a first rollup of a long ledger goes on over several sweeps
DAILY_DIMENSIONS = ("team_id", "api_key_id", "persona", "provider", "model")
RUN_DIMENSIONS = ("team_id", "run_id")
HIT = Q(cache_hit=True)
# Sums every reader may ask for: (ledger expression, rollup expression).
SUMS = {
    "requests": (Count("id"), Sum("requests")),
    "errors": (Count("id", filter=Q(status="error")), Sum("errors")),
    "input": (Sum("input_tokens"), Sum("input_tokens")),
    "output": (Sum("output_tokens"), Sum("output_tokens")),
    "cost": (Sum("cost_usd"), Sum("cost_usd")),
    "saved": (Sum("saved_usd"), Sum("saved_usd")),
    "hits": (Count("id", filter=HIT), Sum("cache_hits")),
    "cache_saved": (Sum("saved_usd", filter=HIT), Sum("cache_saved_usd")),
    "prompt_cached_tokens": (Sum("cached_tokens", filter=~HIT), Sum("prompt_cached_tokens")),
}
MONEY_SUMS = ("cost", "saved", "cache_saved")


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


# -- reading: a time range split between the rollups and the ledger ------------------------


@dataclass(frozen=True)
class Split:
    """[since, until) as rolled days and the ledger's rows for the rest."""

    days: list[date]
    raw: Q  # the moments of the range left to the ledger

    def rolled(self, model=UsageDaily) -> QuerySet:
        if not self.days:
            return model.objects.none()
        runs = Q(pk__in=[])
        for start, end in _runs(self.days):
            runs |= Q(day__gte=start.date(), day__lt=end.date())
        return model.objects.filter(runs)


def split(since: datetime | None, until: datetime | None = None) -> Split:
    """Which days of [since, until) the rollups answer; None is open-ended."""
    rolled = RolledDay.objects.all()
    if since is not None:
        first = since.astimezone(UTC).date()
        rolled = rolled.filter(day__gte=first if day_bounds(first)[0] == since else first + timedelta(days=1))
    if until is not None:
        rolled = rolled.filter(day__lt=until.astimezone(UTC).date())
    days = sorted(rolled.values_list("day", flat=True))
    return Split(days, _raw_moments(since, until, days))


def _raw_moments(since: datetime | None, until: datetime | None, days: list[date]) -> Q:
    """[since, until) minus the rolled days: the gaps between their runs."""
    gaps, at = [], since
    for block_start, block_end in _runs(days):
        if at is None or at < block_start:
            gaps.append((at, block_start))
        at = block_end
    gaps.append((at, until))
    moments = None
    for start, end in gaps:
        if start is not None and end is not None and start >= end:
            continue
        if start is None and end is None:
            return Q()  # all of time: no day rolled up in it
        gap = Q(created_at__gte=start) if end is None else Q(created_at__lt=end) if start is None else Q(
            created_at__gte=start, created_at__lt=end)
        moments = gap if moments is None else moments | gap
    return Q(pk__in=[]) if moments is None else moments


def _runs(days: list[date]) -> list[tuple[datetime, datetime]]:
    """Consecutive days joined: [(start of the first, end of the last), ...]."""
    runs: list[tuple[datetime, datetime]] = []
    for day in days:
        start, end = day_bounds(day)
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


# PostgreSQL's default work_mem (4 MB) has a month of runs, or a busy day's raw
# rows, sorted on disk to be grouped (EXPLAIN ANALYZE at 10M rows: "external
# merge"); a cost read gets this much for its own transaction, so it groups in
# memory (a hash). A read holds one or two such nodes at a time.
READ_WORK_MEM = "64MB"


@contextlib.contextmanager
def _roomy_grouping():
    """A transaction whose sorts and hashes may use READ_WORK_MEM (PostgreSQL)."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL work_mem = '{READ_WORK_MEM}'")
        yield


# The ledger's part of a range, as one read shares it: by day and every dimension.
FINE = ("day", *DAILY_DIMENSIONS)
_shared_ledger_reads: ContextVar[dict | None] = ContextVar("ep_shared_ledger_reads", default=None)


@contextlib.contextmanager
def ledger_reads_shared():
    """Within it, `totals` reads the ledger's part of a range once however many
    groupings ask for it (the costs page's breakdowns and its chart both read
    today's rows: ~45,000 at the end of a busy day at 10M a year), by day and
    every dimension (a few hundred cells), and regroups that."""
    token = _shared_ledger_reads.set({})
    try:
        yield
    finally:
        _shared_ledger_reads.reset(token)


def _ledger_cells(shared: dict, raw: QuerySet, key: tuple) -> list[dict]:
    if key not in shared:
        if "day" not in raw.query.annotations:
            raw = raw.annotate(day=TruncDate("created_at"))
        shared[key] = list(raw.values(*FINE).annotate(**{name: SUMS[name][0] for name in SUMS}))
    return shared[key]


def totals(*, by: tuple[str, ...], sums: tuple[str, ...], since: datetime | None, until: datetime | None = None,
           team_ids: set[int] | None = None, where: Q | None = None, where_rolled: Q | None = None,
           model_calls: bool = True, runs: bool = False) -> dict[tuple, dict]:
    """The ledger's sums over [since, until) grouped `by` field names that the
    ledger and the rollups share (team_id, api_key_id, persona, provider, model;
    run_id with `runs`; "day" is the UTC day), rolled days from the
    rollups (UsageRunDaily with `runs`), the rest from the ledger. `where` is a
    filter written in those shared names (budgets.periods.scope_filter's, say),
    or `where_rolled` for the rollups where it cannot be.
    The rollups hold model calls only: with `model_calls` False the ledger's
    other rows count too, which is right for costs (they cost nothing) only."""
    part = split(since, until)
    raw = Usage.objects.filter(part.raw)
    rolled = part.rolled(UsageRunDaily if runs else UsageDaily)
    if model_calls:
        raw = raw.filter(MODEL_CALL)
    if team_ids is not None:
        raw, rolled = raw.filter(team_id__in=team_ids), rolled.filter(team_id__in=team_ids)
    if where is not None:
        raw, rolled = raw.filter(where), rolled.filter(where if where_rolled is None else where_rolled)
    if "day" in by:
        raw = raw.annotate(day=TruncDate("created_at"))
    found: dict[tuple, dict] = {}
    shared = _shared_ledger_reads.get()
    share = shared is not None and model_calls and where is None and not runs and set(by) <= set(FINE)
    with _roomy_grouping():
        for source, which in ((raw, 0), (rolled, 1)):
            fields = {name: SUMS[name][which] for name in sums}
            if which == 0 and share:
                grouped = _ledger_cells(shared, raw, (since, until, frozenset(team_ids or ()), team_ids is None))
            else:
                grouped = source.values(*by).annotate(**fields) if by else [source.aggregate(**fields)]
            for row in grouped:
                _add(found.setdefault(tuple(row[f] for f in by), dict.fromkeys(sums, 0)), row, sums)
    for entry in found.values():
        for name in MONEY_SUMS:
            if name in entry:
                entry[name] = store.money(entry[name])
    return found


RUN_SUMS = ("cost", "requests", "input", "output")


def top_runs(*, team_ids: set[int] | None, since: datetime | None, until: datetime | None = None,
             limit: int, batch: int | None = None) -> dict[tuple, dict]:
    """The `limit` costliest runs of [since, until), as `totals` would find them
    with by=("run_id",), without summing every run (90 days hold ~120,000).

    A run's cost in the range is at most its cost over every rolled day
    (UsageRun) plus its raw rows. So runs are taken by that bound, costliest
    first, a batch at a time, and summed exactly over the range (their
    UsageRunDaily rows; the ledger for the rest); the walk stops when the
    `limit`-th exact cost reaches the next bound: no run left can pass it.
    Runs of other teams are skipped by the team the run belongs to."""
    part = split(since, until)
    raw = Usage.objects.filter(part.raw).filter(MODEL_CALL)
    rolled = part.rolled(UsageRunDaily)
    if team_ids is not None:
        raw, rolled = raw.filter(team_id__in=team_ids), rolled.filter(team_id__in=team_ids)
    with _roomy_grouping():
        recent = {r["run_id"]: r for r in raw.values("run_id").annotate(**{n: SUMS[n][0] for n in RUN_SUMS})}
    exact = _runs_summed(rolled, list(recent)) if part.days else {}
    if part.days:
        bounds = UsageRun.objects.filter(last_day__gte=part.days[0], first_day__lte=part.days[-1])
        if team_ids is not None:
            bounds = bounds.filter(Q(team_id__in=team_ids) | Q(team_id__isnull=True))
        bounds = bounds.order_by("-cost_usd", "run_id").values_list("run_id", "cost_usd")
        batch, at = batch or max(2 * limit, 50), 0  # runs summed per step of the walk
        while page := list(bounds[at:at + batch]):
            exact.update(_runs_summed(rolled, [run for run, _ in page if run not in exact]))
            costs = sorted((_run_total(exact.get(run), recent.get(run))["cost"] for run in exact.keys() | recent.keys()),
                           reverse=True)
            if len(page) < batch or (len(costs) >= limit and costs[limit - 1] >= page[-1][1]):
                break
            at += batch
    found = [((run,), _run_total(exact.get(run), recent.get(run))) for run in exact.keys() | recent.keys()
             if run in recent or exact[run]["requests"]]
    return dict(sorted(found, key=lambda item: (-item[1]["cost"], item[0][0] or "(none)"))[:limit])


def _runs_summed(rolled: QuerySet, run_ids: list[str]) -> dict[str, dict]:
    """Each of `run_ids`' sums over the rolled days of the range (zeros for none)."""
    found = {run: dict.fromkeys(RUN_SUMS, 0) for run in run_ids}
    for at in range(0, len(run_ids), 1000):
        chunk = run_ids[at:at + 1000]
        for row in rolled.filter(run_id__in=chunk).values("run_id").annotate(**{n: SUMS[n][1] for n in RUN_SUMS}):
            found[row["run_id"]] = row
    return found


def _run_total(rolled: dict | None, recent: dict | None) -> dict:
    total = {n: (rolled or {}).get(n) or 0 for n in RUN_SUMS}
    for n in RUN_SUMS:
        total[n] += (recent or {}).get(n) or 0
    return {n: store.money(total[n]) if n in MONEY_SUMS else total[n] for n in RUN_SUMS}


def _add(entry: dict, row: dict, sums: tuple[str, ...]) -> None:
    for name in sums:
        value = row[name] or 0
        entry[name] += Decimal(str(value)) if name in MONEY_SUMS and isinstance(value, float) else value


def cost_sum(*, since: datetime | None, until: datetime | None = None, where: Q | None = None) -> Decimal:
    """What the ledger's rows in [since, until) matching `where` cost (every
    row: a row that is no model call costs nothing)."""
    found = totals(by=(), sums=("cost",), since=since, until=until, where=where, model_calls=False)
    return found[()]["cost"] if found else Decimal(0)


# -- writing: closed days rolled up, late rows caught, old rows pruned ------------------------


@contextlib.contextmanager
def _exclusive(name: str):
    """One transaction that only one process runs at a time: a PostgreSQL
    advisory lock (False when another process holds it), SQLite's writer queue."""
    with store.writing(), transaction.atomic():
        if connection.vendor != "postgresql":
            yield True
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", [name])
            yield cursor.fetchone()[0]


def day_roll_up(day: date) -> int:
    """(Re)write `day`'s rollups from its ledger rows, and its runs' totals;
    returns how many rows."""
    count, runs = _day_rolled_up(day)
    runs_refresh(runs)
    return count


def _day_rolled_up(day: date) -> tuple[int, set[str]]:
    """`day`'s UsageDaily and UsageRunDaily rewritten; (its rows, the runs whose
    totals are now due for runs_refresh: a sweep of many days refreshes each once)."""
    start, end = day_bounds(day)
    # Read first: a row inserted from here on has a larger id, and is found
    # late by days_with_late_rows.
    last_id = Usage.objects.aggregate(last=Max("id"))["last"] or 0
    rows = Usage.objects.filter(created_at__gte=start, created_at__lt=end)
    count = rows.count()
    runs_before = set(UsageRunDaily.objects.filter(day=day).values_list("run_id", flat=True))
    UsageDaily.objects.filter(day=day).delete()
    UsageRunDaily.objects.filter(day=day).delete()
    calls = rows.filter(MODEL_CALL)
    names = tuple(DAILY_COLUMNS.values())
    daily = calls.values(*DAILY_DIMENSIONS).annotate(**{name: SUMS[name][0] for name in names})
    UsageDaily.objects.bulk_create([UsageDaily(day=day, **_columns(r, DAILY_DIMENSIONS, DAILY_COLUMNS))
                                    for r in daily], batch_size=1000)
    per_run = calls.values(*RUN_DIMENSIONS).annotate(**{name: SUMS[name][0] for name in RUN_COLUMNS.values()})
    per_run = [UsageRunDaily(day=day, **_columns(r, RUN_DIMENSIONS, RUN_COLUMNS)) for r in per_run]
    UsageRunDaily.objects.bulk_create(per_run, batch_size=1000)
    RolledDay.objects.update_or_create(day=day, defaults={"rows": count, "last_id": last_id,
                                                          "rolled_at": timezone.now()})
    return count, runs_before | {r.run_id for r in per_run}


def runs_refresh(run_ids) -> None:
    """Rewrite these runs' UsageRun rows from their UsageRunDaily rows."""
    ids = sorted(set(run_ids))
    for at in range(0, len(ids), 1000):
        chunk = ids[at:at + 1000]
        UsageRun.objects.filter(run_id__in=chunk).delete()
        UsageRun.objects.bulk_create([UsageRun(**fields) for fields in _runs_from_days(chunk)], batch_size=1000)


def _runs_from_days(run_ids: list[str] | None = None) -> list[dict]:
    """UsageRun's fields summed from UsageRunDaily (for `run_ids`, else every run)."""
    days = UsageRunDaily.objects.all() if run_ids is None else UsageRunDaily.objects.filter(run_id__in=run_ids)
    found = days.values("run_id").annotate(cost=Sum("cost_usd"), first=Min("day"), last=Max("day"),
                                           teams=Count("team_id", distinct=True), team=Min("team_id"))
    return [{"run_id": r["run_id"], "team_id": r["team"] if r["teams"] == 1 else None, "first_day": r["first"],
             "last_day": r["last"], "cost_usd": store.money(r["cost"])} for r in found]


# The rollups' columns and the SUMS they hold (their ledger expressions fill them).
DAILY_COLUMNS = {"requests": "requests", "errors": "errors", "input_tokens": "input", "output_tokens": "output",
                 "cost_usd": "cost", "saved_usd": "saved", "cache_hits": "hits", "cache_saved_usd": "cache_saved",
                 "prompt_cached_tokens": "prompt_cached_tokens"}
RUN_COLUMNS = {"requests": "requests", "input_tokens": "input", "output_tokens": "output", "cost_usd": "cost"}


def _columns(row: dict, dimensions: tuple[str, ...], columns: dict[str, str]) -> dict:
    values = {d: row[d] for d in dimensions}
    for column, name in columns.items():
        values[column] = store.money(row[name]) if name in MONEY_SUMS else row[name] or 0
    return values


def days_to_roll(now: datetime) -> list[date]:
    """Closed days (past the grace) with ledger rows and no rollup yet, oldest first."""
    last = (now - timedelta(seconds=settings.EP_ROLLUP_GRACE_SECONDS)).astimezone(UTC).date() - timedelta(days=1)
    first = Usage.objects.aggregate(first=Min("created_at"))["first"]
    if first is None or first.astimezone(UTC).date() > last:
        return []
    first_day = first.astimezone(UTC).date()
    done = set(RolledDay.objects.filter(day__gte=first_day, day__lte=last).values_list("day", flat=True))
    return [d for d in (first_day + timedelta(days=i) for i in range((last - first_day).days + 1)) if d not in done]


def days_with_late_rows() -> list[date]:
    """Rolled days (raw rows kept) the ledger has rows for that came after their
    rollup: rows inserted since the newest rollup (ids past its watermark) dated
    in a rolled day, say a spool replayed after days of outage; and, for rows
    whose ids were handed out before a rollup but committed after it, the last
    few rolled days whose count changed."""
    rolled = RolledDay.objects.filter(pruned=False)
    newest = rolled.aggregate(watermark=Max("last_id"), last=Max("day"))
    late: set[date] = set()
    if newest["last"] is not None:
        inserted_since = Usage.objects.filter(id__gt=newest["watermark"] or 0,
                                              created_at__lt=day_bounds(newest["last"])[1])
        late = {moment.astimezone(UTC).date() for moment in inserted_since.values_list("created_at", flat=True)}
    for r in rolled.order_by("-day")[:RECHECK_DAYS]:
        start, end = day_bounds(r.day)
        if Usage.objects.filter(created_at__gte=start, created_at__lt=end).count() != r.rows:
            late.add(r.day)
    return sorted(late & set(rolled.filter(day__in=late).values_list("day", flat=True)))


def rollups_sweep(*, now: datetime | None = None, limit: int | None = DAYS_PER_SWEEP) -> list[date]:
    """Roll up what is due (late rows first, then closed days, at most `limit`
    days), then prune per the retention. Returns the days rolled."""
    now = now or timezone.now()
    with _exclusive("ep-ledger-rollups") as mine:
        if not mine:
            return []  # another process is at it
        due = days_with_late_rows() + days_to_roll(now)
        due = due[:limit] if limit else due
        runs: set[str] = set()
        for day in due:
            runs |= _day_rolled_up(day)[1]
        runs_refresh(runs)  # each run once, however many of its days were rolled up
    days_prune(now=now)
    return due


def days_prune(*, now: datetime | None = None, retention_days: int | None = None) -> tuple[int, int]:
    """Delete the raw rows of rolled days older than the retention, day by day,
    each only if its rollup still counts all its rows (else rolled again first).
    Returns (days, rows) deleted; nothing when the retention is 0 (off)."""
    keep = settings.EP_USAGE_RETENTION_DAYS if retention_days is None else retention_days
    if keep <= 0:
        return 0, 0
    horizon = ((now or timezone.now()).astimezone(UTC) - timedelta(days=keep)).date()
    days = deleted = 0
    for day in RolledDay.objects.filter(pruned=False, day__lt=horizon).order_by("day").values_list("day", flat=True):
        with _exclusive("ep-ledger-rollups") as mine:
            if not mine:
                break
            start, end = day_bounds(day)
            rows = Usage.objects.filter(created_at__gte=start, created_at__lt=end)
            if rows.count() != RolledDay.objects.get(day=day).rows:
                day_roll_up(day)
            deleted += rows._raw_delete(rows.db)  # no signals, no cascades: nothing points at a Usage row
            RolledDay.objects.filter(day=day).update(pruned=True)
            days += 1
    return days, deleted


# -- proof: rollups == ledger -------------------------------------------------------------


def rollups_verify() -> list[tuple[date, str]]:
    """Every rolled day whose raw rows are kept, its rollups against its rows
    (each sum, per rollup row; runs per team); returns each difference, its day
    and in words, none when equal."""
    problems = []
    for day in RolledDay.objects.filter(pruned=False).order_by("day").values_list("day", flat=True):
        start, end = day_bounds(day)
        rows = Usage.objects.filter(created_at__gte=start, created_at__lt=end)
        for label, raw, rolled in _day_comparisons(day, rows):
            if raw != rolled:
                problems.append((day, f"{day}: {label}: the ledger says {raw}, the rollup {rolled}"))
    return problems + _runs_comparison()


def _runs_comparison() -> list[tuple[date, str]]:
    """UsageRun against UsageRunDaily: each difference on the run's last day
    (rolling that day up again rewrites the run)."""
    summed = {r["run_id"]: r for r in _runs_from_days()}
    kept = {r["run_id"]: r for r in UsageRun.objects.values("run_id", "team_id", "first_day", "last_day", "cost_usd")}
    problems = []
    for run_id in sorted(summed.keys() | kept.keys()):
        days, run = summed.get(run_id), kept.get(run_id)
        if days != (run and {**run, "cost_usd": store.money(run["cost_usd"])}):
            day = (days or run)["last_day"]
            problems.append((day, f"{day}: run {run_id or '(none)'}: its days say {days}, its run rollup {run}"))
    return problems


def _day_comparisons(day: date, rows: QuerySet):
    names = tuple(DAILY_COLUMNS.values())
    raw = {tuple(r[d] for d in DAILY_DIMENSIONS): r for r in
           rows.filter(MODEL_CALL).values(*DAILY_DIMENSIONS).annotate(**{n: SUMS[n][0] for n in names})}
    rolled = {tuple(r[d] for d in DAILY_DIMENSIONS): r for r in UsageDaily.objects.filter(day=day)
              .values(*DAILY_DIMENSIONS).annotate(**{n: SUMS[n][1] for n in names})}
    for key in raw.keys() | rolled.keys():
        yield ", ".join(map(str, key)), _normal(raw.get(key), names), _normal(rolled.get(key), names)
    runs_raw = {r["team_id"]: r for r in rows.filter(MODEL_CALL).values("team_id").annotate(
        requests=Count("id"), cost=Sum("cost_usd"), runs=Count("run_id", distinct=True))}
    runs_rolled = {r["team_id"]: r for r in UsageRunDaily.objects.filter(day=day).values("team_id").annotate(
        requests=Sum("requests"), cost=Sum("cost_usd"), runs=Count("run_id", distinct=True))}
    for team in runs_raw.keys() | runs_rolled.keys():
        yield (f"runs of team {team}", _normal(runs_raw.get(team), ("requests", "cost", "runs")),
               _normal(runs_rolled.get(team), ("requests", "cost", "runs")))


def _normal(row: dict | None, names: tuple[str, ...]) -> dict:
    row = row or {}
    return {n: store.money(row.get(n)) if n in MONEY_SUMS else (row.get(n) or 0) for n in names}
