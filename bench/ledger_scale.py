"""The ledger at scale (issue 23): N Usage rows (default 10,000,000, a year of a
busy team) seeded with COPY into a PostgreSQL database of its own, then every
page and API call that reads the ledger timed through Django's test client as
a logged-in operator (an admin API key for GET /costs), and the request path's
budget checks against that ledger.

Twice: with the ledger alone (as before the rollups), then after `ledger_rollup`
(budgets/rollups.py). Each target runs --reps times; p50 and max are reported.

    python bench/ledger_scale.py                    # 10M rows (~25 min on 2 cores), drops its database after
    python bench/ledger_scale.py --rows 200000 --keep --reps 3
    python bench/ledger_scale.py --reuse            # a database kept by --keep: no seeding
Make: `make bench-ledger` (BENCH_LEDGER_ARGS=...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("EP_BENCH_PG", "postgres://postgres@127.0.0.1:5432/")  # the server, its databases appended
TEAMS = ["platform", "search", "payments", "mobile", "data", "growth", "infra", "support"]
PERSONAS = ["architect", "developer", "reviewer", "tester", "planner", "writer", "researcher", "ops"]
# provider, model, $ per million input tokens, $ per million output tokens
MODELS = [("openai", "gpt-4o", 2.5, 10), ("openai", "gpt-4o-mini", 0.15, 0.6),
          ("anthropic", "claude-sonnet-4", 3, 15), ("anthropic", "claude-haiku-4", 1, 5),
          ("gemini", "gemini-2.5-pro", 1.25, 10), ("gemini", "gemini-2.5-flash", 0.3, 2.5), ("demo", "demo", 0, 0)]
PERSONA_WEIGHTS = [3, 8, 4, 3, 2, 1, 2, 1]
PERSONA_ROUTES = {slug: (MODELS[i % 6], MODELS[(i + 3) % 6]) for i, slug in enumerate(PERSONAS)}
STATUSES = ["ok"] * 93 + ["error"] * 3 + ["refused"] * 3 + ["cancelled"]
ENDPOINTS = ["v1.chat.completions"] * 12 + ["api.v1.chat"] * 5 + ["v1.embeddings", "v1.models", "costs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=365, help="the seeded rows span this many days up to now")
    parser.add_argument("--db", default="ep_bench_ledger")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards (default: dropped)")
    parser.add_argument("--reuse", action="store_true", help="time a kept database again, without seeding")
    parser.add_argument("--seed-only", action="store_true", help="seed and stop (keeps the database for --reuse)")
    parser.add_argument("--reps-before", type=int, default=2,
                        help="repetitions with the ledger alone (seconds a page at 10M rows)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    if not args.reuse:
        database_recreate(args.db)
    os.environ["DATABASE_URL"] = PG + args.db
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789abcdef")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["EP_ROLLUP_SECONDS"] = "0"  # nothing rolls up behind the measurement's back
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    try:
        results = run(args)
        if not args.seed_only:
            write(results, Path(args.out))
    finally:
        from django.db import connections

        connections.close_all()
        if not (args.keep or args.seed_only):
            database_drop(args.db)


def database_recreate(name: str) -> None:
    import psycopg

    with psycopg.connect(PG + "postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def database_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG + "postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"dropped database {name}", flush=True)


# -- the world and its ledger ----------------------------------------------------------------


def run(args) -> dict:
    from django.core.management import call_command

    from budgets.models import RolledDay, Usage, UsageDaily, UsageRun, UsageRunDaily

    results: dict = {"rows": args.rows, "days": args.days, "reps": args.reps, "reps_before": args.reps_before,
                     "started": _now_text(),
                     "load": os.getloadavg()}
    if not args.reuse:
        call_command("migrate", verbosity=0, interactive=False)
        world = world_create()
        started = time.perf_counter()
        seed(args.rows, args.days, world)
        results["seed_seconds"] = round(time.perf_counter() - started, 1)
        print(f"seeded {args.rows:,} rows in {results['seed_seconds']} s", flush=True)
        if args.seed_only:
            return results
    else:
        world = world_find()
        results["rows"] = Usage.objects.count()
    results["table_mb"] = table_megabytes()
    UsageDaily.objects.all().delete()
    UsageRunDaily.objects.all().delete()
    UsageRun.objects.all().delete()
    RolledDay.objects.all().delete()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host allowed, as in a test
    targets = targets_list(world)
    print("timing with the ledger alone (no rollups) ...", flush=True)
    results["before"] = time_all(targets, world, args.reps_before)
    results["before"].update(budget_path(world, args.reps_before))
    started = time.perf_counter()
    call_command("ledger_rollup")
    results["rollup_seconds"] = round(time.perf_counter() - started, 1)
    _analyze("budgets_usagedaily", "budgets_usagerundaily", "budgets_usagerun", "budgets_rolledday")  # as autovacuum would soon
    results["rollup_rows"] = {"daily": UsageDaily.objects.count(), "runs": UsageRunDaily.objects.count(),
                              "run totals": UsageRun.objects.count()}
    results["rollup_mb"] = {t: _megabytes(t) for t in ("budgets_usagedaily", "budgets_usagerundaily",
                                                       "budgets_usagerun")}
    results["rollup_one_day_ms"] = one_day_rollup_ms()
    print(f"rolled up in {results['rollup_seconds']} s: {results['rollup_rows']}", flush=True)
    print("timing with the rollups ...", flush=True)
    results["after"] = time_all(targets, world, args.reps)
    results["after"].update(budget_path(world, args.reps))
    from budgets.rollups import rollups_verify

    started = time.perf_counter()
    results["rollups_verify"] = {"problems": len(rollups_verify()),
                                 "seconds": round(time.perf_counter() - started, 1)}
    return results


def world_create() -> dict:
    from django.contrib.auth import get_user_model

    from accounts.models import ApiKey, Team
    from budgets.models import Budget
    from personas.models import Persona

    teams = [Team.objects.create(name=name) for name in TEAMS]
    keys = [ApiKey.issue(team=team, name=f"{team.name}-{kind}")[0] for team in teams for kind in ("ci", "hive", "dev")]
    personas = [Persona.objects.create(slug=slug, name=slug) for slug in PERSONAS]
    big = Decimal(10) ** 7
    Budget.objects.create(name="everything monthly", scope="global", period="month", limit_usd=big)
    Budget.objects.create(name="platform monthly", scope="team", team=teams[0], period="month", limit_usd=big)
    Budget.objects.create(name="platform lifetime", scope="team", team=teams[0], period="lifetime", limit_usd=big)
    Budget.objects.create(name="search ci daily", scope="key", api_key=keys[3], period="day", limit_usd=big)
    Budget.objects.create(name="architect weekly", scope="persona", persona=personas[0], period="week",
                          limit_usd=big)
    get_user_model().objects.create_superuser("bench-operator", "bench@example.com", "bench-password-1")
    return world_find()


def world_find() -> dict:
    """The seeded teams and keys, and a fresh admin key for GET /costs (only
    its hash is stored, so each run issues its own)."""
    from accounts.models import ApiKey, Team

    ApiKey.objects.filter(name="bench-admin").delete()
    teams = list(Team.objects.order_by("pk").values_list("pk", flat=True))
    _, raw = ApiKey.issue(team=Team.objects.get(pk=teams[0]), name="bench-admin", scopes=["chat", "admin"])
    return {"teams": teams, "raw_key": raw,
            "keys": list(ApiKey.objects.exclude(name="bench-admin").order_by("pk").values_list("pk", "team_id"))}


def seed(rows: int, days: int, world: dict) -> None:
    """COPY, in time order as the ledger grows: each day's share of the rows
    (weekdays busier, the year growing), teams and personas skewed, runs of
    ~25 requests, errors, refusals, cache hits and prompt caching."""
    import psycopg
    from django.db import connection

    from budgets.models import Usage

    rng = random.Random(23)
    fields = [f for f in Usage._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(f.column for f in fields)
    weights = [(1.0 if (i % 7) < 5 else 0.4) * (0.6 + 0.8 * i / days) for i in range(days)]
    per_day = [int(rows * w / sum(weights)) for w in weights]
    per_day[-1] += rows - sum(per_day)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    keys_by_team = {}
    for key_id, team_id in world["keys"]:
        keys_by_team.setdefault(team_id, []).append(key_id)
    team_weights = [1 / (i + 1) for i in range(len(world["teams"]))]
    state = {"n": 0, "run": 0, "run_left": 0, "run_team": None}
    with psycopg.connect(PG + connection.settings_dict["NAME"]) as conn:
        with conn.cursor() as cursor, cursor.copy(f"COPY budgets_usage ({columns}) FROM STDIN") as copy:
            for day, count in enumerate(per_day):
                day_start = start + timedelta(days=day)
                # Today is only partly over: its rows stay in the past.
                span = min(86_400, (datetime.now(UTC) - day_start).total_seconds() - 1)
                for offset in sorted(rng.random() * span for _ in range(count)):
                    copy.write_row(_row(rng, state, day_start + timedelta(seconds=offset), world, keys_by_team,
                                        team_weights, [f.column for f in fields]))
                if day % 30 == 0:
                    print(f"  day {day}/{days}: {state['n']:,} rows", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE budgets_usage")


def _row(rng, state, at, world, keys_by_team, team_weights, columns) -> tuple:
    state["n"] += 1
    if state["run_left"] <= 0 and rng.random() < 0.6:
        state["run"] += 1
        state["run_left"] = rng.randint(5, 45)
        state["run_team"] = rng.choices(world["teams"], team_weights)[0]
    in_run = state["run_left"] > 0
    state["run_left"] -= 1
    team = state["run_team"] if in_run else rng.choices(world["teams"], team_weights)[0]
    endpoint = "api.v1.chat" if in_run else rng.choice(ENDPOINTS)
    model_call = endpoint not in ("v1.models", "costs")
    persona = rng.choices(PERSONAS, PERSONA_WEIGHTS)[0] if model_call else ""
    status = rng.choice(STATUSES) if model_call else "ok"
    # A persona's route: its first step answers most calls, a fallback the rest.
    route = PERSONA_ROUTES.get(persona)
    provider, model, price_in, price_out = (
        (route[0] if rng.random() < 0.9 else route[1]) if model_call else ("", "", 0, 0))
    answered = model_call and status in ("ok", "cancelled")
    cache_hit = answered and rng.random() < 0.04
    tokens_in = rng.randint(200, 6000) if model_call and status != "refused" else 0
    tokens_out = rng.randint(20, 1500) if answered else 0
    cached = tokens_in // 2 if answered and not cache_hit and rng.random() < 0.2 else 0
    cost = Decimal(tokens_in * price_in + tokens_out * price_out) / 1_000_000 if answered else Decimal(0)
    saved = cost if cache_hit else Decimal(cached * price_in * 0.9) / 1_000_000
    values = {
        "request_id": f"req_{state['n']:012x}", "created_at": at, "team_id": team,
        "api_key_id": rng.choices(keys_by_team[team], (6, 3, 1))[0], "persona": persona,
        "provider": provider if status != "refused" else "", "model": model if status != "refused" else "",
        "endpoint": endpoint, "stream": rng.random() < 0.5, "status": status,
        "http_status": {"ok": 200, "error": 502, "refused": 429, "cancelled": 499}[status],
        "error_code": {"error": "upstream_unavailable", "refused": "budget_exceeded"}.get(status, ""),
        "error_message": "", "input_tokens": tokens_in, "output_tokens": tokens_out, "cached_tokens": cached,
        "reasoning_tokens": 0, "cost_usd": Decimal(0) if cache_hit else cost.quantize(Decimal("1e-8")),
        "cache_hit": cache_hit, "saved_usd": saved.quantize(Decimal("1e-8")),
        "latency_ms": rng.randint(300, 9000) if answered else 5, "ttft_ms": None,
        "attempts": 0 if status == "refused" or cache_hit or not model_call else 1, "attempt_log": "[]",
        "trace_id": "", "run_id": f"run-{state['run']:07d}" if in_run else "",
        "step": f"step-{state['run_left'] % 6}" if in_run else "",
    }
    return tuple(values[c] for c in columns)


def _megabytes(table: str) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s)", [table])
        return round(cursor.fetchone()[0] / 2**20, 1)


def _analyze(*tables: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {table}")


def table_megabytes() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('budgets_usage'), pg_relation_size('budgets_usage')")
        total, heap = cursor.fetchone()
    return {"total": total // 2**20, "heap": heap // 2**20}


# -- what is timed --------------------------------------------------------------------------


def targets_list(world: dict) -> list[tuple[str, str, str]]:
    """(name, kind, path): kind "page" (operator's session) or "api" (admin key)."""
    from budgets.models import Usage

    team = world["teams"][1]
    row = Usage.objects.order_by("-created_at").values("pk", "run_id").first()
    run = Usage.objects.exclude(run_id="").order_by("-created_at").values_list("run_id", flat=True).first()
    # A page deep in the log: 60,000 rows back (halfway on a small ledger).
    old = Usage.objects.order_by("-created_at").values_list("pk", flat=True)[min(60_000, Usage.objects.count() // 2)]
    targets = [("overview", "page", "/dashboard/"), ("budgets", "page", "/dashboard/budgets/")]
    for days in (7, 30, 90):
        targets.append((f"costs {days} days", "page", f"/dashboard/costs/?days={days}"))
    for stack in ("team", "provider", "model"):
        targets.append((f"costs 30 days stacked by {stack}", "page", f"/dashboard/costs/?days=30&stack={stack}"))
    targets.append(("costs 30 days, one team", "page", f"/dashboard/costs/?days=30&team={team}"))
    targets += [
        ("usage log", "page", "/dashboard/usage/"),
        ("usage log, an older page", "page", f"/dashboard/usage/?before={old}"),
        ("usage log, one team", "page", f"/dashboard/usage/?team={team}"),
        ("usage log, persona", "page", "/dashboard/usage/?persona=reviewer"),
        ("usage log, refused", "page", "/dashboard/usage/?status=refused"),
        ("usage log, model + status", "page", "/dashboard/usage/?model=gemini-2.5-pro&status=error"),
        ("usage log, one run", "page", f"/dashboard/usage/?run_id={run}"),
        ("usage log, model calls, a week", "page", "/dashboard/usage/?calls=model&since="
         + (datetime.now(UTC) - timedelta(days=7)).date().isoformat()),
        ("usage row", "page", f"/dashboard/usage/{row['pk']}/"),
        ("run page", "page", f"/dashboard/runs/{run}/"),
    ]
    for group in ("team", "persona", "provider", "model", "key", "run"):
        targets.append((f"GET /costs group_by={group}", "api", f"/costs?group_by={group}"))
    targets.append(("GET /costs group_by=run, limit 10,000", "api", "/costs?group_by=run&limit=10000"))
    since = (datetime.now(UTC) - timedelta(days=365)).date().isoformat()
    targets.append(("GET /costs a year, by model", "api", f"/costs?group_by=model&start={since}"))
    return targets


def time_all(targets, world: dict, reps: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-operator"))
    api = Client(HTTP_AUTHORIZATION=f"Bearer {world['raw_key']}")
    timings = {}
    for name, kind, path in targets:
        samples = []
        for _ in range(reps):
            started = time.perf_counter()
            response = (client if kind == "page" else api).get(path)
            samples.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{name}: {path} answered {response.status_code}")
        timings[name] = _summary(samples)
        print(f"  {name:40s} p50 {timings[name]['p50']:8.1f} ms  max {timings[name]['max']:8.1f} ms", flush=True)
    timings.update(paginator_as_before(reps))
    timings["CSV export, first bytes (30 days)"] = asyncio.run(csv_first_bytes(reps))
    print(f"  CSV first bytes: {timings['CSV export, first bytes (30 days)']}", flush=True)
    return timings


def paginator_as_before(reps: int) -> dict:
    """The usage log's queries before keyset paging: Django's Paginator, a
    COUNT(*) of the matches and an OFFSET (the first page, and 60,000 rows back)."""
    from django.core.paginator import Paginator

    from budgets.models import Usage

    out = {}
    for name, number in (("first page", 1), ("60,000 rows back", 1201)):
        samples = []
        for _ in range(reps):
            started = time.perf_counter()
            page = Paginator(Usage.objects.select_related("team", "api_key"), 50).get_page(number)
            list(page)
            samples.append((time.perf_counter() - started) * 1000)
        out[f"usage log queries as before (COUNT + OFFSET), {name}"] = _summary(samples)
    return out


async def csv_first_bytes(reps: int) -> dict:
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model
    from django.test import AsyncClient

    client = AsyncClient()
    await client.aforce_login(await sync_to_async(get_user_model().objects.get)(username="bench-operator"))
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        response = await client.get("/dashboard/costs/?days=30&format=csv")
        chunks = aiter(response.streaming_content)
        await anext(chunks)  # the header line
        await anext(chunks)  # the first rows
        samples.append((time.perf_counter() - started) * 1000)
        await chunks.aclose()
    return _summary(samples)


def budget_path(world: dict, reps: int) -> dict:
    """Reserve + settle of one request against every budget that applies, as
    the gateway does (budgets.ledger), and the table scans it made of Usage
    (pg_stat_user_tables: none is the claim). A budget's first counter of a
    period is summed from the ledger once: timed on its own."""
    from budgets import ledger
    from budgets.models import BudgetCounter, Usage
    from gateway.config import load_snapshot

    budgets = list(load_snapshot(0).budgets)
    stamp = time.time_ns()

    def pair(request_id: str) -> None:
        ledger.budget_reserve(request_id=request_id, budgets=budgets, amount=Decimal("0.01"))
        ledger.usage_settle(row=Usage(request_id=request_id, team_id=world["teams"][0], persona="architect",
                                      provider="openai", model="gpt-4o", endpoint="v1.chat.completions",
                                      cost_usd=Decimal("0.002"), attempts=1), budgets=budgets)

    BudgetCounter.objects.all().delete()
    ledger.forget_counters()
    started = time.perf_counter()
    pair(f"first-{stamp}")  # every budget's counter created: the ledger summed per budget
    first = (time.perf_counter() - started) * 1000
    scans_before = _usage_scans()
    samples = []
    for i in range(max(reps, 20)):
        started = time.perf_counter()
        pair(f"bench-{stamp}-{i}")
        samples.append((time.perf_counter() - started) * 1000)
    scans = {k: v - scans_before[k] for k, v in _usage_scans().items()}
    out = {"budget check: reserve + settle (counters exist)": _summary(samples) | {"usage_scans": scans},
           "budget check: first request of a period (counters created from the ledger)": {"p50": round(first, 1),
                                                                                           "max": round(first, 1)}}
    print(f"  budget path: {out}", flush=True)
    return out


def _usage_scans() -> dict:
    from django.db import connection, connections

    # A busy backend reports its table statistics at most once a second, an
    # idle one within 10 s (PostgreSQL's PGSTAT_IDLE_INTERVAL): every earlier
    # read (the pages, the writer's new counters) is in before a snapshot.
    connections.close_all()
    time.sleep(11)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'budgets_usage'")
        seq, idx = cursor.fetchone()
    return {"seq_scan": seq, "idx_scan": idx}


def one_day_rollup_ms() -> float:
    """The sweeper's steady work: one closed day rolled up again."""
    from budgets.models import RolledDay
    from budgets.rollups import day_roll_up

    day = RolledDay.objects.order_by("-day").values_list("day", flat=True).first()
    started = time.perf_counter()
    day_roll_up(day)
    return round((time.perf_counter() - started) * 1000, 1)


def _summary(samples: list[float]) -> dict:
    return {"p50": round(statistics.median(samples), 1), "max": round(max(samples), 1)}


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ledger-scale-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print("\n| target | ledger alone p50 / max (ms) | with rollups p50 / max (ms) |\n|---|---|---|")
    for name, before in results["before"].items():
        after = results["after"][name]
        print(f"| {name} | {before['p50']:,} / {before['max']:,} | {after['p50']:,} / {after['max']:,} |")
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
