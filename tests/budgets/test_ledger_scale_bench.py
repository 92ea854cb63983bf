"""bench/ledger_scale.py runs as written: a tiny N through the whole script
(seed with COPY, time every target with the ledger alone and with rollups,
the budget path, verify, drop its database). The 10M run is a bench, not a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_ledger_bench_runs_and_leaves_no_database(test_database_url, tmp_path):
    if not test_database_url.startswith("postgres"):
        pytest.skip("the ledger bench seeds PostgreSQL with COPY (the test run is on SQLite)")
    server = test_database_url.rsplit("/", 1)[0] + "/"
    name = f"ep_bench_ledger_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "EP_BENCH_PG": server}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the bench's own (production) settings
    done = subprocess.run([sys.executable, "bench/ledger_scale.py", "--rows", "3000", "--days", "4", "--reps", "1",
                           "--reps-before", "1", "--db", name, "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| usage log, an older page |" in done.stdout and f"dropped database {name}" in done.stdout
    [report] = tmp_path.glob("ledger-scale-*.json")
    results = json.loads(report.read_text())
    assert results["rows"] == 3000 and results["rollups_verify"]["problems"] == 0
    assert set(results["before"]) == set(results["after"]) and len(results["after"]) == 32
    assert results["after"]["budget check: reserve + settle (counters exist)"]["usage_scans"]["seq_scan"] == 0
    with psycopg.connect(server + "postgres") as db:
        assert db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None
