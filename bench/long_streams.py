"""Long streams, as real models answer: how many a gateway holds open at once.

The upstream (bench/mock_upstream.py --first-token-ms 1000 --chunks 60
--chunk-delay-ms 500) takes a second to its first token, then sends a chunk
every half second: each stream stays open ~31 s. For each level (1,000,
2,000, ... streams) the client starts that many streams spread evenly over
`spread` seconds, so they are all open together for the last ~10 s, and
reports for the level:

- errors: a status other than 200, a connection closed before the stream's
  end (`[DONE]` and the chunked terminator), or no first byte within 60 s;
- added time to first byte: the first body byte's arrival minus the mock's
  first-token delay, p50 / p99;
- at the peak (all streams started): the target's resident memory and open
  file descriptors, its growth per open stream over the idle figure taken
  before the level, database connections, connections to the upstream.

A level is held when it has no error and added TTFB p99 <= 100 ms. The ramp
goes on past a level that is only slow (every stream answered, none failed),
to show where the slowness turns into failures, and stops at the first level
with an error.

Raw sockets and asyncio (uvloop when present) on the client side: 5,000
streams of 62 events each are ~10,000 reads a second, which this loop does
on a fraction of a core.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loadgen import Target, percentiles
from procs import Proc, established

FIRST_TOKEN_S = 1.0
HELD_TTFB_P99_MS = 100.0


@dataclass
class Level:
    streams: int
    ttfb: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    finished: int = 0
    open_now: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _one_stream(target: Target, level: Level, payload: bytes) -> None:
    writer = None
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        start = time.perf_counter()
        writer.write(payload)
        level.open_now += 1
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
        if head[9:12] != b"200":
            level.error(f"status {head[9:12].decode()}")
            return
        tail = await asyncio.wait_for(reader.read(65536), timeout=60)
        level.ttfb.append(time.perf_counter() - start - FIRST_TOKEN_S)
        while not tail.endswith(b"0\r\n\r\n"):
            more = await asyncio.wait_for(reader.read(65536), timeout=30)
            if not more:
                level.error("closed mid-stream")
                return
            tail = tail[-64:] + more
        if b"[DONE]" not in tail:
            level.error("ended without [DONE]")
            return
        level.finished += 1
    except TimeoutError:
        level.error("timeout")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
        level.error(type(error).__name__)
    finally:
        level.open_now -= 1 if writer is not None else 0
        if writer is not None:
            writer.close()


def db_connections(database: str | None) -> int | None:
    if not database:
        return None
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc",
                          f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"],
                         check=False, capture_output=True, text=True, timeout=10)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _footprint(procs: list[Proc]) -> tuple[int, int]:
    memory = [m for p in procs for m in p.memory().values()]
    return sum(m["rss_kib"] for m in memory), sum(m["fds"] for m in memory)


async def _level(target: Target, streams: int, spread: float, peak: Callable[[Level], None]) -> Level:
    level = Level(streams)
    payload = target.request(stream=True)
    tasks = []
    started = time.perf_counter()
    for i in range(streams):
        delay = started + spread * i / streams - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one_stream(target, level, payload)))
    await asyncio.sleep(1.5)  # the last ones reach their first token: the peak
    await asyncio.to_thread(peak, level)
    await asyncio.gather(*tasks)
    return level


def ramp(target: Target, procs: list[Proc], *, levels: list[int], spread: float, upstream_port: int,
         database: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Every level in turn until one is not held; what each level measured."""
    results: dict[str, dict] = {}
    for streams in levels:
        time.sleep(3)  # the last level's connections close, its memory settles
        idle_rss, idle_fds = _footprint(procs)
        sample: dict = {}

        def peak(level: Level, sample: dict = sample) -> None:
            rss, fds = _footprint(procs)
            sample.update(open=level.open_now, rss_kib=rss, fds=fds, db_connections=db_connections(database),
                          upstream_connections=established(upstream_port))

        level = _run(_level(target, streams, spread, peak))
        ttfb = percentiles(level.ttfb)
        held = not level.errors and level.finished == streams and ttfb.get("p99", 1e9) <= HELD_TTFB_P99_MS
        per_stream = (sample["rss_kib"] - idle_rss) / max(1, sample["open"])
        results[str(streams)] = {
            "held": held, "finished": level.finished, "errors": level.errors, "ttfb_added_ms": ttfb,
            "idle_rss_kib": idle_rss, "idle_fds": idle_fds, "peak": sample, "kib_per_open_stream": per_stream,
        }
        log(f"    {streams} streams: {'held' if held else 'NOT held'}; finished {level.finished}, errors "
            f"{level.errors or 0}; added TTFB p50 {ttfb.get('p50', 0):.0f} / p99 {ttfb.get('p99', 0):.0f} ms; "
            f"{sample['open']} open at peak, {per_stream:.0f} KiB each, fds {sample['fds']}, "
            f"db connections {sample['db_connections']}, upstream {sample['upstream_connections']}")
        if level.errors or level.finished < streams:
            break
    held_levels = [int(n) for n, r in results.items() if r["held"]]
    return {"levels": results, "largest_held": max(held_levels, default=0)}


def _run(coroutine):
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)
