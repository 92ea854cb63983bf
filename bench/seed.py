"""Prepare a benchmark database: migrate, then a provider pointed at the mock,
personas routed to it, a large hard budget, and a fresh API key printed alone
on stdout. Also `--check`: print the leak check (reservations, reserved) as JSON.

Run with the same environment as the gateway (DATABASE_URL, SECRET_KEY...):
    python bench/seed.py --mock-url http://127.0.0.1:9100/v1 --long-mock-url http://127.0.0.1:9101/v1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.core.management import call_command
from django.db.models import Count, Sum

from accounts.models import ApiKey, Team
from budgets.models import Budget, BudgetCounter, Reservation, Usage
from personas.models import Persona, RouteStep
from providers.models import Model, Provider


def _provider(name: str, url: str) -> Provider:
    provider, _ = Provider.objects.update_or_create(
        name=name, defaults={"kind": "openai", "base_url": url, "enabled": True, "read_timeout": 60.0})
    provider.set_credential("sk-mock")
    provider.save()
    for model in ("mock-model", "mock-error"):
        Model.objects.update_or_create(provider=provider, name=model, defaults={
            "input_price": Decimal("1.0"), "output_price": Decimal("2.0"), "max_output_tokens": 256})
    return provider


def seed(mock_url: str, long_mock_url: str) -> str:
    """`bench` and `bench-error` on the fast mock; `bench-long` on the long-stream mock."""
    call_command("migrate", verbosity=0, interactive=False)
    fast, slow = _provider("mock", mock_url), _provider("mock-long", long_mock_url)
    for slug, provider, model in (("bench", fast, "mock-model"), ("bench-error", fast, "mock-error"),
                                  ("bench-long", slow, "mock-model")):
        persona, _ = Persona.objects.update_or_create(slug=slug, defaults={"name": slug, "enabled": True})
        RouteStep.objects.filter(persona=persona).delete()
        RouteStep.objects.create(persona=persona, position=0, provider=provider, model=model)
    team, _ = Team.objects.get_or_create(name="bench")
    Budget.objects.filter(name="bench-global").delete()
    Budget.objects.create(name="bench-global", scope="global", period="month", limit_usd=Decimal(10000000),
                          hard=True, thresholds=[])
    _, raw = ApiKey.issue(team=team, name="bench", scopes=["chat"])
    return raw


def check() -> dict:
    counters = BudgetCounter.objects.filter(budget__name="bench-global").aggregate(
        reserved=Sum("reserved"), spent=Sum("spent"))
    ledger = Usage.objects.filter(team__name="bench").aggregate(n=Count("id"), cost=Sum("cost_usd"))
    by_status = dict(Usage.objects.filter(team__name="bench").values_list("status").annotate(n=Count("id")))
    def money(value) -> str:  # SQLite sums decimals as floats: back to the ledger's 8 places
        amount = Decimal(value or 0).quantize(Decimal("0.00000001"))
        return str(amount if amount else Decimal("0.00000000"))  # no "-0E-8" from a float sum

    return {
        "reservations": Reservation.objects.count(),
        "reserved": money(counters["reserved"]),
        "spent": money(counters["spent"]),
        "usage_rows": ledger["n"],
        "usage_cost": money(ledger["cost"]),
        "usage_by_status": by_status,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mock-url", default="http://127.0.0.1:9100/v1")
    parser.add_argument("--long-mock-url", default="http://127.0.0.1:9101/v1")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        print(json.dumps(check()))
    else:
        print(seed(args.mock_url, args.long_mock_url))


if __name__ == "__main__":
    main()
