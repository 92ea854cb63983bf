"""bench/soak.py runs as documented (a short soak on SQLite) and its verdict
catches what a soak is for: a lost or extra row, a reservation left, memory
that keeps growing."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import soak  # noqa: E402


def _window(index: int, *, rss: float = 300.0, rows: int = 10, expected: int = 10, reservations: int = 0):
    return soak.Window(index=index, minute=index, sent=10, client_failures=0, rps=10.0, rss_mib=rss, fds=90,
                       db_connections=None, redis_clients=None, upstream_connections=4, usage_rows=rows,
                       rows_expected=expected, reservations=reservations, reserved="0",
                       counters_match_ledger=True)


def test_a_short_soak_runs_and_finds_the_ledger_exact():
    done = subprocess.run([sys.executable, "bench/soak.py", "--minutes", "0.25", "--variant", "sqlite",
                           "--no-report"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "after every window: **yes**" in done.stdout
    raw = Path(done.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    samples = json.loads(raw.read_text())
    raw.unlink()
    windows = samples["windows"]
    assert len(windows) >= 2 and all(w["usage_rows"] == w["rows_expected"] for w in windows)
    assert sum(w["sent"] for w in windows) == windows[-1]["rows_expected"] > 0
    assert samples["summary"]["gateway_alive_at_end"] is True


def test_the_verdict_fails_a_missing_row_a_left_reservation_and_growing_memory():
    fine = soak.verdict([_window(0), _window(1), _window(2, rss=305)], {"gateway_alive_at_end": True})
    assert fine["every_window_exact"] and fine["rss_levelled"]
    lost = soak.verdict([_window(0), _window(1, rows=9)], {})
    assert not lost["every_window_exact"]
    held = soak.verdict([_window(0), _window(1, reservations=1)], {})
    assert not held["every_window_exact"]
    leaking = soak.verdict([_window(0), _window(1, rss=300), _window(2, rss=340)], {})
    assert leaking["every_window_exact"] and not leaking["rss_levelled"]
