"""The soak: a long mixed load on the gateway as in production, watched over time.

Starts the mock upstream and the gateway (`config.serve --workers 2`, PostgreSQL +
Redis by default, full pipeline with a hard budget), then runs the mixed load
(plain requests, streams, streams the client walks away from, provider errors)
in windows. After each window the load pauses until the gateway is quiet, and
the soak records the workers' memory and file descriptors, the database's and
Redis's connections, the open upstream connections, and whether the ledger
holds: one Usage row per request sent, no reservation left, budget counters
equal to the ledger. The table goes into docs/PERFORMANCE.md between the soak
markers; raw samples into bench/results/.

    python bench/soak.py --minutes 10            # bounded (the figures in docs/PERFORMANCE.md)
    python bench/soak.py --hours 24              # the origin's "gateway stable for 24 hours"
    python bench/soak.py --minutes 1 --variant sqlite --no-report

A window that breaks a rule (a row missing or extra, a reservation left, a
counter off) is reported as such; the soak goes on to the end so a leak's
trend shows, and exits 1 if any window failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import report
from long_streams import db_connections
from procs import Proc, established, wait_http, wait_listening
from run import (
    BENCH,
    GATEWAY_PORT,
    HOST,
    MIXED_KINDS,
    MOCK_PORT,
    PG_DATABASE,
    PY,
    RESULTS,
    ROOT,
    gateway_env,
    ledger_check,
    machine,
    prepare_db,
    server_cmd,
)

BEGIN = "<!-- soak:begin (written by bench/soak.py) -->"
END = "<!-- soak:end -->"
# Memory may grow while caches and pools fill; after the first windows it must level off.
RSS_GROWTH_LIMIT_PCT = 10.0


@dataclass
class Window:
    """What one window of load did, and the gateway's state once quiet after it."""

    index: int
    minute: float  # minutes since the load started, at the end of the window
    sent: int
    client_failures: int
    rps: float
    rss_mib: float
    fds: int
    db_connections: int | None
    redis_clients: int | None
    upstream_connections: int
    usage_rows: int
    rows_expected: int
    reservations: int
    reserved: str
    counters_match_ledger: bool

    @property
    def exact(self) -> bool:
        return (self.usage_rows == self.rows_expected and self.reservations == 0
                and Decimal(self.reserved) == 0 and self.counters_match_ledger)


def redis_clients(url: str | None) -> int | None:
    if not url:
        return None
    import redis

    return int(redis.Redis.from_url(url).info("clients")["connected_clients"])


def quiet_ledger(env: dict[str, str], expected: int, *, wait: float = 15.0) -> dict:
    """The ledger once the gateway has settled what was sent (cancelled streams
    settle a moment after the client leaves); waits up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        check = ledger_check(env)
        settled = check["usage_rows"] >= expected and check["reservations"] == 0
        if settled or time.monotonic() > deadline:
            return check
        time.sleep(0.5)


def soak(args) -> tuple[list[Window], dict]:
    env = gateway_env(args.variant)
    key = prepare_db(args.variant, env)
    headers = {"Authorization": f"Bearer {key}"}
    target = loadgen.Target(HOST, GATEWAY_PORT, "/v1/chat/completions", headers, "bench", error_model="bench-error")
    mock = Proc("mock", [PY, str(BENCH / "mock_upstream.py"), "--port", str(MOCK_PORT)], env=dict(os.environ),
                log=RESULTS / "soak-mock.log", cwd=ROOT)
    gateway = None
    windows: list[Window] = []
    try:
        wait_http(f"http://{HOST}:{MOCK_PORT}/v1/models", proc=mock)
        gateway = Proc("gateway", server_cmd("serve", args.workers), env=env,
                       log=RESULTS / f"soak-gateway-{args.variant}.log", cwd=ROOT)
        wait_http(f"http://{HOST}:{GATEWAY_PORT}/health", proc=gateway)
        wait_listening(GATEWAY_PORT, args.workers)
        sent = ledger_check(env)["usage_rows"]
        started = time.perf_counter()
        end = started + args.duration_s
        index = 0
        # A remainder shorter than half a window joins the last one.
        while (left := end - time.perf_counter()) > 0 and gateway.alive():
            seconds = left if left < 1.5 * args.window_s else args.window_s
            t0 = time.perf_counter()
            outcome = loadgen.run_sync(target, kinds=MIXED_KINDS, concurrency=args.concurrency,
                                       requests=10**9, seconds=seconds)
            elapsed = time.perf_counter() - t0
            sent += outcome.sent
            check = quiet_ledger(env, sent)
            memory = gateway.memory()
            window = Window(
                index=index, minute=(time.perf_counter() - started) / 60, sent=outcome.sent,
                client_failures=outcome.failures, rps=outcome.sent / max(elapsed, 1e-9),
                rss_mib=sum(m["rss_kib"] for m in memory.values()) / 1024,
                fds=sum(m["fds"] for m in memory.values()),
                db_connections=db_connections(PG_DATABASE if args.variant == "pg" else None),
                redis_clients=redis_clients(env.get("REDIS_URL")), upstream_connections=established(MOCK_PORT),
                usage_rows=check["usage_rows"], rows_expected=sent, reservations=check["reservations"],
                reserved=str(Decimal(check["reserved"]).normalize()), counters_match_ledger=check["spent"] == check["usage_cost"],
            )
            windows.append(window)
            print(f"  window {index} ({window.minute:.1f} min): {outcome.sent} sent, {window.rps:.0f}/s, "
                  f"rss {window.rss_mib:.0f} MiB, fds {window.fds}, db {window.db_connections}, "
                  f"redis {window.redis_clients}, upstream {window.upstream_connections}, rows "
                  f"{window.usage_rows}/{window.rows_expected}, reserved {window.reserved}: "
                  f"{'exact' if window.exact else 'NOT EXACT'}", flush=True)
            index += 1
        alive = gateway.alive()
    finally:
        if gateway is not None:
            gateway.stop()
        mock.stop()
    return windows, {"gateway_alive_at_end": alive}


def verdict(windows: list[Window], extra: dict) -> dict:
    """The rules over the whole soak: exact in every window, memory levelled off
    (growth from the second window to the last), descriptors and connections flat."""
    base = windows[min(1, len(windows) - 1)]
    last = windows[-1]
    growth = 100 * (last.rss_mib - base.rss_mib) / max(base.rss_mib, 1e-9)
    return {
        "windows": len(windows), "requests": sum(w.sent for w in windows),
        "every_window_exact": all(w.exact for w in windows),
        "rss_growth_pct": growth, "rss_levelled": growth < RSS_GROWTH_LIMIT_PCT,
        "fds_range": [min(w.fds for w in windows), max(w.fds for w in windows)],
        "db_connections_range": _range([w.db_connections for w in windows]),
        "redis_clients_range": _range([w.redis_clients for w in windows]),
        "upstream_range": _range([w.upstream_connections for w in windows]),
        "client_failures": sum(w.client_failures for w in windows),
    } | extra


def _range(values: list[int | None]) -> list[int] | None:
    present = [v for v in values if v is not None]
    return [min(present), max(present)] if present else None


def render(args, windows: list[Window], summary: dict, info: dict) -> str:
    span = f"{args.duration_s / 3600:g} h" if args.duration_s >= 3600 else f"{args.duration_s / 60:g} min"
    lines = [
        f"Run: {info['date']} on {info['cores']} cores, Python {info['python']}; {args.variant} "
        f"({'PostgreSQL + Redis' if args.variant == 'pg' else 'SQLite'}), `config.serve --workers {args.workers}`, "
        f"{args.concurrency} clients, mixed load ({', '.join(sorted(set(MIXED_KINDS)))}), {span} in "
        f"{args.window_s:g} s windows. Redis clients count the whole server (other users of it included).",
        "",
        f"- {summary['requests']:,} requests; one Usage row per request, no reservation left and counters equal "
        f"to the ledger after every window: **{'yes' if summary['every_window_exact'] else 'NO'}**",
        f"- memory from window 1 to the end: {summary['rss_growth_pct']:+.1f}% "
        f"(**{'levelled' if summary['rss_levelled'] else 'still growing'}**; rule < {RSS_GROWTH_LIMIT_PCT:g}%); "
        f"file descriptors {summary['fds_range'][0]}-{summary['fds_range'][1]}; database connections "
        f"{_text(summary['db_connections_range'])}; upstream connections {_text(summary['upstream_range'])}; "
        f"client-side failures {summary['client_failures']}; gateway alive at the end: "
        f"{'yes' if summary['gateway_alive_at_end'] else 'NO'}",
        "",
        "| window | minute | req/s | RSS (MiB, all workers) | fds | db conns | redis clients | upstream conns "
        "| rows / requests | reserved |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in _sampled(windows, 30):
        lines.append(f"| {w.index} | {w.minute:.1f} | {w.rps:,.0f} | {w.rss_mib:.0f} | {w.fds} | "
                     f"{_text(w.db_connections)} | {_text(w.redis_clients)} | {w.upstream_connections} | "
                     f"{w.usage_rows:,} / {w.rows_expected:,}{'' if w.exact else ' **not exact**'} | {w.reserved} |")
    return "\n".join(lines)


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return f"{value[0]}-{value[1]}"
    return str(value)


def _sampled(windows: list[Window], most: int) -> list[Window]:
    """At most `most` rows for a long soak: evenly spread, first and last kept."""
    if len(windows) <= most:
        return windows
    step = (len(windows) - 1) / (most - 1)
    return [windows[round(i * step)] for i in range(most)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="length of the soak (default 10)")
    length.add_argument("--hours", type=float, help="length of the soak, e.g. 24")
    parser.add_argument("--window", type=float, default=None, help="seconds per window (default: 60, or "
                                                                    "a tenth of a short soak)")
    parser.add_argument("--variant", default="pg", choices=["pg", "sqlite"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="clients (a steady load, not the maximum)")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/PERFORMANCE.md")
    args = parser.parse_args()
    args.duration_s = 3600 * args.hours if args.hours else 60 * (args.minutes if args.minutes is not None else 10)
    args.window_s = args.window or min(60.0, max(5.0, args.duration_s / 10))
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"soak: {args.variant}, {args.duration_s / 60:g} min in {args.window_s:g} s windows, "
          f"{args.concurrency} clients", flush=True)
    windows, extra = soak(args)
    if not windows:
        raise SystemExit("the soak ran no window (the gateway did not start?)")
    summary = verdict(windows, extra)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = RESULTS / f"soak-{stamp}.json"
    raw.write_text(json.dumps({"machine": info, "args": {k: v for k, v in vars(args).items()},
                               "summary": summary, "windows": [asdict(w) for w in windows]}, indent=1))
    text = render(args, windows, summary, info)
    print(text)
    print(f"raw samples: {raw}")
    if not args.no_report:
        report.write(ROOT / "docs" / "PERFORMANCE.md", text, begin=BEGIN, end=END)
    ok = summary["every_window_exact"] and summary["gateway_alive_at_end"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
