"""Delete the ledger's raw Usage rows older than the retention, keeping their
totals in the daily rollups (budgets/rollups.py days_prune): costs, budgets and
GET /costs add up the same after. The usage log, a run's page and the CSV
export show raw rows only, so they end at the retention horizon."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from budgets.rollups import days_prune, rollups_sweep


class Command(BaseCommand):
    help = "Delete raw Usage rows older than EP_USAGE_RETENTION_DAYS (or --days), their rollups kept."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--days", type=int, default=None,
                            help="Keep this many days of raw rows (default: EP_USAGE_RETENTION_DAYS).")

    def handle(self, *args, days: int | None = None, **options) -> None:
        keep = settings.EP_USAGE_RETENTION_DAYS if days is None else days
        if keep <= 0:
            raise CommandError("No retention: set EP_USAGE_RETENTION_DAYS (or --days) to a number of days above 0.")
        rollups_sweep(limit=None)  # every closed day rolled up first: only rolled days are pruned
        pruned_days, rows = days_prune(retention_days=keep)
        self.stdout.write(f"Deleted {rows} raw row(s) of {pruned_days} day(s) older than {keep} days; "
                          "their totals stay in the rollups.")
