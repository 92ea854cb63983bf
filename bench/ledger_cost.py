"""CPU of the ledger's writes (reserve + settle of one request), one at a time
and batched, in-process against a bench database (bench/seed.py first).

    DATABASE_URL=... SECRET_KEY=... python bench/ledger_cost.py [N]
"""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.utils import timezone

from budgets import ledger
from budgets.models import Usage
from gateway.config import load_snapshot


def main(n: int) -> None:
    budgets = [b for b in load_snapshot(0).budgets if b.name == "bench-global"]
    stamp = str(time.time_ns())

    def row(request_id: str) -> Usage:
        return Usage(request_id=request_id, persona="bench", provider="mock", model="mock-model",
                     endpoint="ledger-cost", cost_usd=Decimal("0.00002"), input_tokens=5, output_tokens=7)

    def pair(request_id: str) -> None:
        ledger.budget_reserve(request_id=request_id, budgets=budgets, amount=Decimal("0.0001"))
        ledger.usage_settle(row=row(request_id), budgets=budgets)

    for i in range(20):
        pair(f"warm-{stamp}-{i}")
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        pair(f"seq-{stamp}-{i}")
    print(f"one at a time: {1000 * (time.process_time() - cpu) / n:.2f} ms CPU per reserve+settle, "
          f"{1000 * (time.perf_counter() - wall) / n:.2f} ms wall")
    cpu, wall = time.process_time(), time.perf_counter()
    ids = [f"batch-{stamp}-{i}" for i in range(n)]
    held = [ledger.writer.submit(ledger._Reserve(i, budgets, Decimal("0.0001"), timezone.now())) for i in ids]
    [f.result() for f in held]
    settled = [ledger.writer.submit(ledger._Settle(row(i), budgets)) for i in ids]
    [f.result() for f in settled]
    print(f"batched: {1000 * (time.process_time() - cpu) / n:.2f} ms CPU per reserve+settle, "
          f"{1000 * (time.perf_counter() - wall) / n:.2f} ms wall")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
