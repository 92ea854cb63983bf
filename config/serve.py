"""The production server: N uvicorn workers, each with its own listening socket.

    python -m config.serve --host 0.0.0.0 --port 8000 --workers 2

Why not `uvicorn --workers N`: there every worker accepts from one shared
socket, and whichever process wakes first takes the connections. Clients that
keep their connections open (agents, load balancers, wrk) then stay on that
one process: measured here, one worker at 107% of a core and the other at 13%
(docs/PERFORMANCE.md). Each worker here binds its own socket with
SO_REUSEPORT, so the kernel spreads new connections across the workers.

The parent only supervises: it restarts a worker that dies and stops them all
on SIGTERM/SIGINT. Each worker serves HTTP and websockets (uvicorn, uvloop,
httptools) for the whole ASGI application, as `uvicorn config.asgi:application`
would, and stops gracefully (config/draining.py): it stops accepting at once,
lets what is in flight finish within `--grace` seconds (EP_SHUTDOWN_GRACE_SECONDS,
default 30) and writes every request's row before it exits, so instances behind
a proxy can be restarted one at a time.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import signal
import socket
import sys
import time

APP = "config.asgi:application"
RESTART_PAUSE_SECONDS = 1.0
# A draining worker's last steps after its grace period: cancelled requests
# write their rows, the ledger writer flushes. Past this it is killed.
EXIT_MARGIN_SECONDS = 10.0


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket the kernel load-balances with the workers' others."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def ensure_port_free(host: str, port: int) -> None:
    """Refuse to start beside another server on the same port: with SO_REUSEPORT
    a second instance would not fail to bind, it would silently take half of
    the first one's connections. A probe bound without SO_REUSEPORT fails if
    anything listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise SystemExit(f"config.serve: cannot listen on {host}:{port}: {error.strerror}") from None


# A full collection walks every live object and stops the worker meanwhile:
# with a thousand open streams per worker that was 100-500 ms, and with
# Python's default threshold (10) it came every ~8-10 s while streams came and
# went (a 31 s stream's objects all reach the oldest generation, and a full
# collection starts when new ones there reach 25% of it): the slowest 1% of
# new streams waited 370-630 ms for their first byte, and most of those
# collections freed nothing. At 1,000 one comes after 100 times as many
# young collections (tens of minutes under load); requests leave no garbage
# in cycles (config/asgi.py), so little waits for it. docs/PERFORMANCE.md,
# "Garbage collection", has the measurements.
FULL_COLLECTION_THRESHOLD = 1000


def tune_collector() -> None:
    """For a worker whose application is loaded: what is loaded now lives as
    long as the process, so the collector stops walking it (`gc.freeze`); full
    collections come rarely; every collection is timed into /metrics.
    (Raising the young generation's threshold instead made each young
    collection long enough to stall a request 20-45 ms every ~1.2 s under
    load: measured, not kept.)"""
    from gateway.observability import metrics

    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
    metrics.count_collections()


def run_worker(host: str, port: int, backlog: int, log_level: str, grace: float) -> None:
    import uvicorn  # imported in the worker: the parent stays small

    from config.draining import DrainingServer

    config = uvicorn.Config(
        APP, loop="uvloop", http="httptools", ws="websockets-sansio", lifespan="off",
        access_log=False,  # one log line per request costs more than the request (PERFORMANCE_NOTES)
        log_level=log_level, backlog=backlog, proxy_headers=False, timeout_graceful_shutdown=grace,
    )
    config.load()  # imports the application: Django, the SDKs, the URLconf
    tune_collector()
    # Listen only now: the kernel spreads new connections over every listening
    # socket, so a socket bound before the ~1 s of imports would hold a share of
    # them waiting (a replaced worker's first requests took that long).
    sock = bind(host, port, backlog)
    DrainingServer(config).run(sockets=[sock])


def supervise(args: argparse.Namespace) -> int:
    context = multiprocessing.get_context("spawn")  # no state shared from the parent

    def start() -> multiprocessing.Process:
        proc = context.Process(target=run_worker, daemon=False,
                               args=(args.host, args.port, args.backlog, args.log_level, args.grace))
        proc.start()
        return proc

    workers = [start() for _ in range(args.workers)]
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)  # it drains (config/draining.py), then exits

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.5)
        for i, proc in enumerate(workers):
            if not stopping and not proc.is_alive():
                print(f"config.serve: worker {proc.pid} exited ({proc.exitcode}); restarting", file=sys.stderr,
                      flush=True)
                time.sleep(RESTART_PAUSE_SECONDS)
                workers[i] = start()
    ends = time.monotonic() + args.grace + EXIT_MARGIN_SECONDS
    for proc in workers:
        proc.join(timeout=max(0.0, ends - time.monotonic()))
        if proc.is_alive():
            proc.kill()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)))
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--grace", type=float, default=float(os.environ.get("EP_SHUTDOWN_GRACE_SECONDS", "30")),
                        help="seconds in-flight requests and streams get to finish after SIGTERM")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    ensure_port_free(args.host, args.port)
    if args.workers <= 1:
        run_worker(args.host, args.port, args.backlog, args.log_level, args.grace)
        return 0
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
