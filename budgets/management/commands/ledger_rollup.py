"""Roll up every closed day of the ledger not rolled up yet (budgets/rollups.py).
The sweeper does this a few days at a time; run it once after upgrading, so a
long ledger's costs pages are fast at once, or from cron where no gateway sweeps."""

from django.core.management.base import BaseCommand

from budgets.rollups import rollups_sweep


class Command(BaseCommand):
    help = "Roll up every closed day of the ledger not rolled up yet (and prune per EP_USAGE_RETENTION_DAYS)."

    def handle(self, *args, **options) -> None:
        days = rollups_sweep(limit=None)
        self.stdout.write(f"Rolled up {len(days)} day(s)" + (f", {days[0]} to {days[-1]}." if days else "."))
