"""The benchmark, end to end, in one command: `make bench` (or `python bench/run.py`).

Starts a mock OpenAI upstream on 127.0.0.1, measures it directly, then the
gateway as in production (full pipeline: API key, persona routed to the mock,
a hard budget, usage recording) on SQLite and on PostgreSQL+Redis, then the
LiteLLM proxy and the Portkey gateway against the same mock, and writes the
tables into docs/PERFORMANCE.md (between the bench markers) and raw output to
bench/results/. The long-stream ramp (bench/long_streams.py: a second mock
that answers like a real model, 1 s to the first token, then 60 chunks 0.5 s
apart) runs against ours on PostgreSQL + Redis, LiteLLM (2 workers) and Portkey.

    python bench/run.py                 # everything (~25 minutes)
    python bench/run.py --quick         # shorter phases, smaller mixed run, ramp to 3,000 (~10 minutes)
    python bench/run.py --variants sqlite --no-litellm --no-portkey --long-streams 0 --servers serve,uvicorn
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import long_streams
import report
from procs import Proc, established, wait_http, wait_listening

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PY = sys.executable
HOST = "127.0.0.1"
MOCK_PORT, LONG_MOCK_PORT, GATEWAY_PORT, LITELLM_PORT, PORTKEY_PORT = 9100, 9101, 8100, 4100, 8787
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = BENCH / ".venv-litellm"
# Portkey's gateway from npm, in its own folder (never a project dependency);
# its streaming needs @hono/node-server 1.13.5 (the performance issue says so).
PORTKEY_VERSION = "1.15.2"
PORTKEY_DIR = BENCH / ".portkey"
PORTKEY_PACKAGE = {"name": "ep-bench-portkey", "private": True,
                   "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
                   "overrides": {"@hono/node-server": "1.13.5"}}
PG_DATABASE = "ep_bench"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/7"
SECRET = "bench-only-secret-key-0123456789abcdef"
MIXED_KINDS = ["plain"] * 4 + ["stream"] * 3 + ["cancel"] * 2 + ["error"]


# -- setup -----------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk (apt-get)...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / f".installed-{LITELLM_VERSION}"
    if not marker.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} ...", flush=True)
        subprocess.run([shutil.which("python3.11") or "python3", "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                       check=True)
        marker.touch()
    return binary


def ensure_portkey() -> Path:
    entry = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    marker = PORTKEY_DIR / f".installed-{PORTKEY_VERSION}"
    if not marker.exists():
        print(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {PORTKEY_DIR} ...", flush=True)
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        (PORTKEY_DIR / "package.json").write_text(json.dumps(PORTKEY_PACKAGE, indent=1))
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], check=True, cwd=PORTKEY_DIR)
        marker.touch()
    return entry


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu,
            "cores": os.cpu_count(), "mem_gib": round(int(mem) / 1024 / 1024, 1), "kernel": platform.release(),
            "python": platform.python_version()}


# -- load ------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, *, body: dict, headers: dict[str, str], connections: int, seconds: float, name: str) -> dict:
    script = RESULTS / f"{name}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = '{json.dumps(body)}'",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=seconds + 30).stdout
    (RESULTS / f"{name}.wrk.txt").write_text(out)
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              "requests": int(re.search(r"(\d+) requests in", out).group(1)),
              "non_2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
              "socket_errors": (m.group(0) if (m := re.search(r"Socket errors:.*", out)) else "")}
    for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        result[key] = _ms(re.search(rf"\s{pct}%\s+([\d.]+\w+)", out).group(1))
    return result


class Meter:
    """CPU seconds and peak memory of one target's processes over a phase."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs

    def __enter__(self):
        self.cpu0 = self._cpu()
        self.t0 = time.perf_counter()
        return self

    def _cpu(self) -> float:
        return sum(sum(p.cpu_seconds().values()) for p in self.procs)

    def __exit__(self, *exc) -> None:
        self.cpu = self._cpu() - self.cpu0
        self.wall = time.perf_counter() - self.t0


def phases(label: str, url: str, headers: dict[str, str], model: str, procs: list[Proc], secs: float,
           *, ttfb_requests: int) -> dict:
    """The standard phases, identical for the mock, the gateway and LiteLLM."""
    out: dict[str, dict] = {}
    plain = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
    stream = plain | {"stream": True}
    wrk(url, body=plain, headers=headers, connections=16, seconds=2, name=f"{label}-warmup")
    for phase, body, conns in (("plain_c16", plain, 16), ("plain_c1", plain, 1), ("stream_c16", stream, 16)):
        with Meter(procs) as meter:
            result = wrk(url, body=body, headers=headers, connections=conns, seconds=secs, name=f"{label}-{phase}")
        result["cpu_ms_per_req"] = 1000 * meter.cpu / max(1, result["requests"])
        result["cpu_cores"] = meter.cpu / meter.wall
        out[phase] = result
        print(f"  {label} {phase}: {result['rps']:.0f}/s p50 {result['p50']:.2f} ms p99 {result['p99']:.2f} ms "
              f"cpu {result['cpu_ms_per_req']:.2f} ms/req non2xx {result['non_2xx']}", flush=True)
    target = loadgen.Target(HOST, int(url.split(":")[2].split("/")[0]), "/" + url.split("/", 3)[3], headers, model)
    for phase, conc in (("ttfb_c1", 1), ("ttfb_c16", 16)):
        outcome = loadgen.run_sync(target, kinds=["stream"], concurrency=conc, requests=ttfb_requests, seconds=secs)
        out[phase] = loadgen.percentiles(outcome.ttfb) | {"failures": outcome.failures, "statuses": outcome.statuses}
        print(f"  {label} {phase}: ttfb p50 {out[phase].get('p50', 0):.2f} ms p99 {out[phase].get('p99', 0):.2f} ms",
              flush=True)
    out["memory"] = {p.name: p.memory() for p in procs}
    return out


# -- targets ---------------------------------------------------------------------------


def server_cmd(server: str, workers: int) -> list[str]:
    app = "config.asgi:application"
    if server == "serve":  # production: config/serve.py, uvicorn workers with SO_REUSEPORT sockets
        return [PY, "-m", "config.serve", "--host", HOST, "--port", str(GATEWAY_PORT), "--workers", str(workers)]
    if server == "granian":
        return [PY, "-m", "granian", "--interface", "asginl", "--host", HOST, "--port", str(GATEWAY_PORT),
                "--workers", str(workers), "--loop", "uvloop", "--log-level", "warning", "--no-access-log",
                "--backlog", "2048", app]
    if server == "uvicorn":
        return [PY, "-m", "uvicorn", app, "--host", HOST, "--port", str(GATEWAY_PORT), "--workers", str(workers),
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                "--lifespan", "off", "--backlog", "2048"]
    if server == "daphne":
        return [PY, "-m", "daphne", "-b", HOST, "-p", str(GATEWAY_PORT), "-v", "0", app]
    raise ValueError(server)


def gateway_env(variant: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "EP_"))}
    env |= {"SECRET_KEY": SECRET, "DEBUG": "0", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "config.settings", "EP_ALLOW_PRIVATE_PROVIDER_URLS": "1"}
    if variant == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{RESULTS / 'ep_bench.sqlite3'}"
    else:
        env["DATABASE_URL"] = PG_URL
        env["REDIS_URL"] = REDIS_URL
    return env


def prepare_db(variant: str, env: dict[str, str]) -> str:
    if variant == "sqlite":
        for path in RESULTS.glob("ep_bench.sqlite3*"):
            path.unlink()
    else:
        subprocess.run(["dropdb", "--if-exists", "-h", HOST, "-U", "postgres", PG_DATABASE], check=True)
        subprocess.run(["createdb", "-h", HOST, "-U", "postgres", PG_DATABASE], check=True)
    seeded = subprocess.run([PY, str(BENCH / "seed.py"), "--mock-url", f"http://{HOST}:{MOCK_PORT}/v1",
                             "--long-mock-url", f"http://{HOST}:{LONG_MOCK_PORT}/v1"], check=False,
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if seeded.returncode:
        raise RuntimeError(seeded.stderr[-2000:])
    return seeded.stdout.strip().splitlines()[-1]


def ledger_check(env: dict[str, str]) -> dict:
    out = subprocess.run([PY, str(BENCH / "seed.py"), "--check"], check=True, env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mixed_run(gateway: Proc, env: dict[str, str], headers: dict[str, str], total: int) -> dict:
    """Streams, cancels, provider errors and plain requests; memory after warm-up vs at the end."""
    target = loadgen.Target(HOST, GATEWAY_PORT, "/v1/chat/completions", headers, "bench", error_model="bench-error")
    warm = max(1000, total // 10)
    before = ledger_check(env)["usage_rows"]
    loadgen.run_sync(target, kinds=MIXED_KINDS, concurrency=16, requests=warm, seconds=120)
    time.sleep(1)
    rss_after_warmup = {pid: m["rss_kib"] for pid, m in gateway.memory().items()}
    fds_after_warmup = {pid: m["fds"] for pid, m in gateway.memory().items()}
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            samples.append(sum(m["rss_kib"] for m in gateway.memory().values()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    outcome = loadgen.run_sync(target, kinds=MIXED_KINDS, concurrency=16, requests=total - warm, seconds=600)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    time.sleep(2)  # let cancelled streams settle their rows
    memory = gateway.memory()
    check = ledger_check(env)
    rss0 = sum(rss_after_warmup.values())
    rss1 = sum(m["rss_kib"] for m in memory.values())
    result = {
        "requests": total, "wall_s": wall, "statuses": outcome.statuses, "client_failures": outcome.failures,
        "rss_after_warmup_kib": rss0, "rss_end_kib": rss1, "rss_peak_during_kib": max(samples or [rss1]),
        "rss_growth_pct": 100 * (rss1 - rss0) / max(1, rss0),
        "fds_after_warmup": sum(fds_after_warmup.values()), "fds_end": sum(m["fds"] for m in memory.values()),
        "upstream_connections_open": established(MOCK_PORT),
        "ledger": check, "usage_rows_added": check["usage_rows"] - before,
    }
    print(f"  mixed: {total} in {wall:.1f}s rss {rss0 // 1024}->{rss1 // 1024} MiB "
          f"({result['rss_growth_pct']:+.1f}%), rows +{result['usage_rows_added']}, "
          f"reservations {check['reservations']}, reserved {check['reserved']}", flush=True)
    return result


def ws_smoke(key: str) -> bool:
    """Websockets still work under this server: one chat over ws /ws/v1/chat."""
    done = subprocess.run([PY, str(BENCH / "ws_smoke.py"), "--port", str(GATEWAY_PORT), "--key", key],
                          check=False, capture_output=True, text=True, timeout=60)
    return done.returncode == 0


def run_gateway(variant: str, server: str, workers: int, secs: float, args, *, mixed: int,
                long_levels: list[int]) -> dict:
    env = gateway_env(variant)
    key = prepare_db(variant, env)
    gateway = Proc(f"gateway-{server}", server_cmd(server, workers), env=env,
                   log=RESULTS / f"gateway-{variant}-{server}.log", cwd=ROOT)
    try:
        wait_http(f"http://{HOST}:{GATEWAY_PORT}/health", proc=gateway)
        if server == "serve":
            wait_listening(GATEWAY_PORT, workers)
        headers = {"Authorization": f"Bearer {key}"}
        url = f"http://{HOST}:{GATEWAY_PORT}/v1/chat/completions"
        result = {"server": server, "workers": workers,
                  "phases": phases(f"ours-{variant}-{server}", url, headers, "bench", [gateway], secs,
                                   ttfb_requests=args.ttfb_requests)}
        result["websocket_ok"] = ws_smoke(key)
        print(f"  websocket chat: {'ok' if result['websocket_ok'] else 'FAILED'}", flush=True)
        if mixed:
            result["mixed"] = mixed_run(gateway, env, headers, mixed)
        if long_levels:
            print("  long streams", flush=True)
            target = loadgen.Target(HOST, GATEWAY_PORT, "/v1/chat/completions", headers, "bench-long")
            result["long_streams"] = long_streams.ramp(
                target, [gateway], levels=long_levels, spread=args.long_spread, upstream_port=LONG_MOCK_PORT,
                database=PG_DATABASE if variant == "pg" else None)
        result["ledger"] = ledger_check(env)
        return result
    finally:
        gateway.stop()


def run_litellm(workers: int, secs: float, args) -> dict:
    binary = ensure_litellm()
    config = RESULTS / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/mock-model\n"
        f"      api_base: http://{HOST}:{MOCK_PORT}/v1\n      api_key: sk-mock\n"
        "  - model_name: bench-long\n    litellm_params:\n      model: openai/mock-model\n"
        f"      api_base: http://{HOST}:{LONG_MOCK_PORT}/v1\n      api_key: sk-mock\n"
        "litellm_settings:\n  telemetry: false\n")
    master_key = "sk-bench-" + secrets.token_hex(16)  # LiteLLM refuses to start without one
    env = dict(os.environ) | {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                              "DISABLE_SCHEMA_UPDATE": "True", "LITELLM_MASTER_KEY": master_key}
    proxy = Proc(f"litellm-{workers}w", [str(binary), "--config", str(config), "--host", HOST, "--port",
                                         str(LITELLM_PORT), "--num_workers", str(workers)],
                 env=env, log=RESULTS / f"litellm-{workers}w.log", cwd=RESULTS)
    try:
        wait_http(f"http://{HOST}:{LITELLM_PORT}/health/liveliness", proc=proxy, timeout=180)
        url = f"http://{HOST}:{LITELLM_PORT}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {master_key}"}
        result = {"workers": workers, "version": LITELLM_VERSION,
                  "phases": phases(f"litellm-{workers}w", url, headers, "bench", [proxy], secs,
                                   ttfb_requests=args.ttfb_requests)}
        if args.long_levels and workers == args.workers:
            print("  long streams", flush=True)
            target = loadgen.Target(HOST, LITELLM_PORT, "/v1/chat/completions", headers, "bench-long")
            result["long_streams"] = long_streams.ramp(target, [proxy], levels=args.long_levels,
                                                       spread=args.long_spread, upstream_port=LONG_MOCK_PORT)
        return result
    finally:
        proxy.stop()


def portkey_headers(port: int) -> dict[str, str]:
    """Portkey's own way to reach an OpenAI-compatible upstream at a custom host."""
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://{HOST}:{port}/v1",
            "Authorization": "Bearer sk-mock"}


def run_portkey(secs: float, args) -> dict:
    entry = ensure_portkey()
    proxy = Proc("portkey", ["node", str(entry), "--port", str(PORTKEY_PORT)], env=dict(os.environ),
                 log=RESULTS / "portkey.log", cwd=PORTKEY_DIR)
    try:
        wait_http(f"http://{HOST}:{PORTKEY_PORT}/", proc=proxy, timeout=60)
        url = f"http://{HOST}:{PORTKEY_PORT}/v1/chat/completions"
        result = {"version": PORTKEY_VERSION, "workers": 1,
                  "phases": phases("portkey", url, portkey_headers(MOCK_PORT), "mock-model", [proxy], secs,
                                   ttfb_requests=args.ttfb_requests)}
        if args.long_levels:
            print("  long streams", flush=True)
            target = loadgen.Target(HOST, PORTKEY_PORT, "/v1/chat/completions", portkey_headers(LONG_MOCK_PORT),
                                    "mock-model")
            result["long_streams"] = long_streams.ramp(target, [proxy], levels=args.long_levels,
                                                       spread=args.long_spread, upstream_port=LONG_MOCK_PORT)
        return result
    finally:
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short phases and a 5,000-request mixed run")
    parser.add_argument("--variants", default="sqlite,pg", help="sqlite, pg (PostgreSQL + Redis)")
    parser.add_argument("--servers", default="serve,uvicorn",
                        help="ASGI servers to measure, production's first: serve (config/serve.py), "
                             "uvicorn (--workers), granian (if installed), daphne")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--litellm-workers", default="1,2")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-portkey", action="store_true")
    parser.add_argument("--long-streams", default=None,
                        help="open-stream levels of the long-stream ramp, e.g. 1000,2000 (0: skip); "
                             "default 1000,2000,3000,4000,5000 (quick: 1000,2000,3000)")
    parser.add_argument("--long-spread", type=float, default=20.0, help="seconds over which a level's streams start")
    parser.add_argument("--long-variants", default="pg", help="which of our variants run the long-stream ramp")
    parser.add_argument("--seconds", type=float, default=None, help="length of each wrk phase")
    parser.add_argument("--mixed", type=int, default=None, help="requests in the mixed run (0: skip)")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/PERFORMANCE.md")
    args = parser.parse_args()
    secs = args.seconds or (4 if args.quick else 8)
    args.mixed = (5000 if args.quick else 20000) if args.mixed is None else args.mixed
    args.ttfb_requests = 1000 if args.quick else 3000
    levels = args.long_streams or ("1000,2000,3000" if args.quick else "1000,2000,3000,4000,5000")
    args.long_levels = [int(n) for n in levels.split(",") if int(n) > 0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    ensure_wrk()
    results: dict = {"machine": machine(), "quick": args.quick, "seconds": secs, "gateway": {}, "litellm": {},
                     "portkey": {}, "long_spread_s": args.long_spread}
    mock = Proc("mock", [PY, str(BENCH / "mock_upstream.py"), "--port", str(MOCK_PORT)], env=dict(os.environ),
                log=RESULTS / "mock.log", cwd=ROOT)
    long_mock = Proc("mock-long", [PY, str(BENCH / "mock_upstream.py"), "--port", str(LONG_MOCK_PORT),
                                   "--first-token-ms", "1000", "--chunks", "60", "--chunk-delay-ms", "500"],
                     env=dict(os.environ), log=RESULTS / "mock-long.log", cwd=ROOT)
    started = time.perf_counter()
    try:
        wait_http(f"http://{HOST}:{MOCK_PORT}/v1/models", proc=mock)
        wait_http(f"http://{HOST}:{LONG_MOCK_PORT}/v1/models", proc=long_mock)
        print("direct to mock", flush=True)
        results["direct"] = phases("direct", f"http://{HOST}:{MOCK_PORT}/v1/chat/completions", {}, "mock-model",
                                   [mock], secs, ttfb_requests=args.ttfb_requests)
        for variant in args.variants.split(","):
            for position, server in enumerate(args.servers.split(",")):
                workers = 1 if server == "daphne" else args.workers
                print(f"gateway: {variant}, {server} x{workers}", flush=True)
                try:
                    with Meter([mock]) as mock_meter:
                        # The mixed run (memory, leaks) for the production server only.
                        first = position == 0
                        run = run_gateway(variant, server, workers, secs, args, mixed=args.mixed if first else 0,
                                          long_levels=args.long_levels if first and variant in
                                          args.long_variants.split(",") else [])
                except Exception as error:  # noqa: BLE001 - report the others; say which one failed
                    print(f"  FAILED: {error!r}", flush=True)
                    results.setdefault("failed", {})[f"{variant}/{server}"] = repr(error)
                    continue
                run["mock_cpu_cores"] = mock_meter.cpu / mock_meter.wall
                results["gateway"][f"{variant}/{server}"] = run
        if not args.no_litellm:
            for workers in (int(w) for w in args.litellm_workers.split(",")):
                print(f"litellm {LITELLM_VERSION} x{workers}", flush=True)
                try:
                    results["litellm"][f"{workers}w"] = run_litellm(workers, secs, args)
                except Exception as error:  # noqa: BLE001
                    print(f"  FAILED: {error!r}", flush=True)
                    results.setdefault("failed", {})[f"litellm-{workers}w"] = repr(error)
        if not args.no_portkey:
            print(f"portkey {PORTKEY_VERSION}", flush=True)
            try:
                results["portkey"]["1p"] = run_portkey(secs, args)
            except Exception as error:  # noqa: BLE001
                print(f"  FAILED: {error!r}", flush=True)
                results.setdefault("failed", {})["portkey"] = repr(error)
    finally:
        mock.stop()
        long_mock.stop()
    results["wall_s"] = time.perf_counter() - started
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = RESULTS / f"bench-{stamp}.json"
    raw.write_text(json.dumps(results, indent=1))
    print(f"raw results: {raw} ({results['wall_s']:.0f} s)")
    text = report.render(results)
    print(text)
    if not args.no_report:
        report.write(ROOT / "docs" / "PERFORMANCE.md", text)


if __name__ == "__main__":
    main()
