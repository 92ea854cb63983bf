"""Turns bench/run.py's results into the tables of docs/PERFORMANCE.md.

Only the part between the markers is rewritten; the analysis around it is prose
kept by hand."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench:begin (written by bench/run.py) -->"
END = "<!-- bench:end -->"


def _rows(results: dict) -> list[tuple[str, dict]]:
    rows = [("direct to mock", results["direct"])]
    rows += [(f"**ours** {name} x{run['workers']}", run["phases"]) for name, run in results["gateway"].items()]
    rows += [(f"LiteLLM {run['version']} x{run['workers']}", run["phases"]) for run in results["litellm"].values()]
    rows += [(f"Portkey {run['version']} (1 Node process)", run["phases"])
             for run in results.get("portkey", {}).values()]
    return rows


def _long_rows(results: dict) -> list[tuple[str, dict]]:
    rows = [(f"**ours** {name} x{run['workers']}", run["long_streams"]) for name, run in results["gateway"].items()
            if run.get("long_streams")]
    rows += [(f"LiteLLM {run['version']} x{run['workers']}", run["long_streams"])
             for run in results["litellm"].values() if run.get("long_streams")]
    rows += [(f"Portkey {run['version']} (1 Node process)", run["long_streams"])
             for run in results.get("portkey", {}).values() if run.get("long_streams")]
    return rows


def _long_cell(level: dict) -> str:
    ttfb, peak = level["ttfb_added_ms"], level["peak"]
    state = "held" if level["held"] else "**not held**: " + (", ".join(
        f"{k} {v}" for k, v in level["errors"].items()) or f"finished {level['finished']}")
    db = f", {peak['db_connections']} db conns" if peak.get("db_connections") is not None else ""
    return (f"{state}; +{ttfb.get('p50', 0):,.0f} / +{ttfb.get('p99', 0):,.0f} ms; "
            f"{level['kib_per_open_stream']:.0f} KiB/stream; {peak['fds']} fds{db}")


def _best_litellm(results: dict, workers: int) -> dict | None:
    run = results["litellm"].get(f"{workers}w")
    return run["phases"] if run else None


def _peak(memory: dict) -> str:
    per = [m["peak_kib"] for procs in memory.values() for m in procs.values()]
    if not per:
        return "-"
    return f"{max(per) / 1024:.0f} MiB" + (f" ({len(per)} procs, {sum(per) / 1024:.0f} total)" if len(per) > 1 else "")


def render(results: dict) -> str:
    m = results["machine"]
    direct = results["direct"]
    lines = [
        f"Run: {m['date']} on {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; {results['seconds']:.0f} s per wrk phase"
        + (" (quick mode)" if results.get("quick") else "") + f"; whole run {results.get('wall_s', 0):.0f} s.",
        "",
        "### Non-streaming (`POST /v1/chat/completions`, wrk, closed loop)",
        "",
        ("| target | req/s, 16 clients | p50 / p90 / p99 at 16 (ms) | 1 client p50 / p90 / p99 (ms) "
         "| added at 1 client p50 / p99 (ms) | CPU per request (ms) | vs LiteLLM x1 / x2 |"),
        "|---|---|---|---|---|---|---|",
    ]
    lite1, lite2 = _best_litellm(results, 1), _best_litellm(results, 2)
    for label, ph in _rows(results):
        c16, c1 = ph["plain_c16"], ph["plain_c1"]
        added = "-" if ph is direct else (f"{c1['p50'] - direct['plain_c1']['p50']:+.2f} / "
                                          f"{c1['p99'] - direct['plain_c1']['p99']:+.2f}")
        ratio = " / ".join(f"{c16['rps'] / lite['plain_c16']['rps']:.1f}x" if lite else "-" for lite in (lite1, lite2))
        lines.append(f"| {label} | {c16['rps']:,.0f} | {c16['p50']:.2f} / {c16['p90']:.2f} / {c16['p99']:.2f} "
                     f"| {c1['p50']:.2f} / {c1['p90']:.2f} / {c1['p99']:.2f} | {added} "
                     f"| {c16['cpu_ms_per_req']:.2f} | {ratio if ph is not direct else '-'} |")
    lines += [
        "",
        "### Streaming (20 chunks + usage + [DONE] per stream)",
        "",
        ("| target | streams/s, 16 clients (wrk) | stream p50 / p99 at 16 (ms) | TTFB 1 client p50 / p99 (ms) "
         "| added TTFB p50 (ms) | TTFB 16 clients p50 / p99 (ms) | CPU per stream (ms) | vs LiteLLM x1 / x2 |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, ph in _rows(results):
        s, t1, t16 = ph["stream_c16"], ph["ttfb_c1"], ph["ttfb_c16"]
        added = "-" if ph is direct else f"{t1.get('p50', 0) - direct['ttfb_c1'].get('p50', 0):+.2f}"
        ratio = " / ".join(f"{s['rps'] / lite['stream_c16']['rps']:.1f}x" if lite else "-" for lite in (lite1, lite2))
        lines.append(f"| {label} | {s['rps']:,.0f} | {s['p50']:.2f} / {s['p99']:.2f} "
                     f"| {t1.get('p50', 0):.2f} / {t1.get('p99', 0):.2f} | {added} "
                     f"| {t16.get('p50', 0):.2f} / {t16.get('p99', 0):.2f} | {s['cpu_ms_per_req']:.2f} "
                     f"| {ratio if ph is not direct else '-'} |")
    lines += ["", "### Processes", "", ("| target | peak resident memory (largest process) "
                                         "| CPU cores used, plain 16 clients | CPU cores used, streams |"),
              "|---|---|---|---|"]
    for label, ph in _rows(results):
        lines.append(f"| {label} | {_peak(ph['memory'])} | {ph['plain_c16']['cpu_cores']:.2f} "
                     f"| {ph['stream_c16']['cpu_cores']:.2f} |")
    mock_load = [f"{name}: {run['mock_cpu_cores']:.2f}" for name, run in results["gateway"].items()]
    if mock_load:
        lines += ["", "Mock upstream CPU (cores, averaged over each gateway run): " + ", ".join(mock_load) + "."]
    mixed = [(name, run["mixed"]) for name, run in results["gateway"].items() if run.get("mixed")]
    if mixed:
        lines += ["", "### Mixed run (plain 40%, streams 30%, cancelled streams 20%, provider errors 10%; 16 clients)",
                  "", ("| gateway | requests | wall (s) | resident memory after warm-up -> end (growth) "
                       "| Usage rows added | reservations left / reserved | open fds warm-up -> end "
                       "| upstream connections open | outcomes |"), "|---|---|---|---|---|---|---|---|---|"]
        for name, r in mixed:
            led = r["ledger"]
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))
            lines.append(f"| {name} | {r['requests']:,} | {r['wall_s']:.1f} | {r['rss_after_warmup_kib'] / 1024:.0f} -> "
                         f"{r['rss_end_kib'] / 1024:.0f} MiB ({r['rss_growth_pct']:+.1f}%) | {r['usage_rows_added']:,} "
                         f"| {led['reservations']} / {led['reserved']} | {r['fds_after_warmup']} -> {r['fds_end']} "
                         f"| {r['upstream_connections_open']} | {outcomes}; client errors {r['client_failures']} |")
    long_rows = _long_rows(results)
    if long_rows:
        levels = sorted({int(n) for _, r in long_rows for n in r["levels"]})
        lines += ["", f"### Long streams (1 s to the first token, then 60 chunks 0.5 s apart; each level's streams "
                  f"start over {results.get('long_spread_s', 20):.0f} s)", "",
                  "Per level: held (no error, added TTFB p99 <= 100 ms) or what failed; added time to first byte "
                  "p50 / p99; resident memory growth per open stream at the peak; open file descriptors and "
                  "database connections at the peak.", "",
                  "| target | largest held | " + " | ".join(f"{n:,} streams" for n in levels) + " |",
                  "|---|---|" + "---|" * len(levels)]
        for label, r in long_rows:
            cells = [_long_cell(r["levels"][str(n)]) if str(n) in r["levels"] else "-" for n in levels]
            lines.append(f"| {label} | {r['largest_held']:,} | " + " | ".join(cells) + " |")
    lines += ["", "### Targets", ""] + _targets(results)
    for name, error in results.get("failed", {}).items():
        lines.append(f"- **{name} did not run**: {error}")
    return "\n".join(lines)


# Non-streaming req/s at 16 clients: PostgreSQL + Redis as the performance issue
# asks; SQLite at least where the issue measured it.
PLAIN_TARGETS = {"pg": 1200, "sqlite": 1146}


def _targets(results: dict) -> list[str]:
    direct = results["direct"]
    portkey = next(iter(results.get("portkey", {}).values()), None)
    out = []
    for name, run in results["gateway"].items():
        ph = run["phases"]
        rps = ph["plain_c16"]["rps"]
        goal = PLAIN_TARGETS.get(name.split("/")[0], 1000)
        checks = [(f"non-streaming >= {goal:,} req/s", rps >= goal, f"{rps:,.0f}")]
        if portkey:
            theirs = portkey["phases"]["plain_c16"]["rps"]
            checks.append(("above Portkey (same run)", rps > theirs, f"{rps:,.0f} vs {theirs:,.0f}"))
        lite = _best_litellm(results, run["workers"])
        if lite:
            ratio = rps / lite["plain_c16"]["rps"]
            checks.append((f">= 8x LiteLLM ({run['workers']} workers, same run)", ratio >= 8, f"{ratio:.1f}x"))
        a50 = ph["plain_c1"]["p50"] - direct["plain_c1"]["p50"]
        a99 = ph["plain_c1"]["p99"] - direct["plain_c1"]["p99"]
        checks += [
            ("added latency p50 <= 1.5 ms", a50 <= 1.5, f"{a50:.2f} ms"),
            ("added latency p99 <= 5 ms", a99 <= 5, f"{a99:.2f} ms"),
            ("streaming >= 600 streams/s", ph["stream_c16"]["rps"] >= 600, f"{ph['stream_c16']['rps']:,.0f}"),
        ]
        if "websocket_ok" in run:
            checks.append(("websocket chat", run["websocket_ok"], "ok" if run["websocket_ok"] else "failed"))
        t = ph["ttfb_c1"].get("p50", 99) - direct["ttfb_c1"].get("p50", 0)
        checks.append(("added TTFB p50 <= 2 ms", t <= 2, f"{t:.2f} ms"))
        if run.get("mixed"):
            r = run["mixed"]
            checks.append(("memory flat in the mixed run (< 10% growth)", r["rss_growth_pct"] < 10,
                           f"{r['rss_growth_pct']:+.1f}%"))
            clean = r["ledger"]["reservations"] == 0 and float(r["ledger"]["reserved"]) == 0
            checks.append(("no reservations left, reserved = 0", clean,
                           f"{r['ledger']['reservations']} / {r['ledger']['reserved']}"))
            checks.append(("one Usage row per request", r["usage_rows_added"] == r["requests"] - r["client_failures"]
                           or r["usage_rows_added"] == r["requests"], f"{r['usage_rows_added']:,} of {r['requests']:,}"))
        if run.get("long_streams"):
            ls = run["long_streams"]
            top = ls["levels"].get(str(ls["largest_held"]))
            checks.append(("long streams held >= 5,000", ls["largest_held"] >= 5000, f"{ls['largest_held']:,}"))
            if top:
                kib = top["kib_per_open_stream"]
                checks.append(("<= 64 KB per open stream", kib * 1024 <= 64_000, f"{kib:.0f} KiB"))
        out.append(f"- **{name}**: " + "; ".join(f"{label}: {value} {'met' if ok else '**not met**'}"
                                                  for label, ok, value in checks))
    return out


def write(path: Path, text: str, *, begin: str = BEGIN, end: str = END) -> None:
    """Replace what is between the markers (bench/run.py's, or another bench's); a
    block whose markers are not there yet is appended to the file."""
    block = f"{begin}\n{text}\n{end}"
    if path.exists() and begin in (old := path.read_text()):
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1] if end in rest else ""
        path.write_text(head + block + tail)
    elif path.exists() and begin != BEGIN:
        path.write_text(path.read_text().rstrip("\n") + "\n\n" + block + "\n")
    else:
        path.write_text("# Performance\n\nMeasured with `make bench` (bench/run.py).\n\n## Latest run\n\n"
                        + block + "\n")
    print(f"wrote {path}")
