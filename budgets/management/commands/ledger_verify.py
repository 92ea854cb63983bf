"""Recompute every budget counter from the ledger and report any drift
(budgets/verify.py); `--fix` writes the ledger's figures back. Exits 1 when
drift is found and not fixed, so a restore script or a cron job can stop on it.
Safe while gateways run."""

from django.core.management.base import BaseCommand, CommandError

from budgets.rollups import day_roll_up, rollups_verify
from budgets.verify import ledger_verify


class Command(BaseCommand):
    help = "Check every budget counter (spent, reserved) against the ledger; --fix repairs drift."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--fix", action="store_true",
                            help="Set each drifted counter to the ledger's figures.")

    def handle(self, *args, fix: bool = False, **options) -> None:
        result = ledger_verify(fix=fix)
        for drift in result.drifts:
            self.stdout.write(("FIXED " if fix else "DRIFT ") + drift.describe())
        summary = (f"Checked {result.checked} counter(s) of {len(result.budgets)} budget(s) against the ledger: "
                   + (f"{len(result.drifts)} drifted" + (", fixed." if fix else ".") if result.drifts
                      else "no drift."))
        if result.skipped_disabled:
            summary += f" {result.skipped_disabled} counter(s) of disabled budgets not checked."
        if result.expired_reservations:
            summary += (f" {result.expired_reservations} reservation(s) past their expiry"
                        " (a gateway's sweeper releases them).")
        self.stdout.write(summary)
        rollup_problems = self._rollups(fix=fix)
        if result.drifts and not fix:
            raise CommandError(f"{len(result.drifts)} budget counter(s) differ from the ledger: "
                               "run `manage.py ledger_verify --fix` to repair them.")
        if rollup_problems and not fix:
            raise CommandError(f"{rollup_problems} rollup day(s) differ from the ledger: "
                               "run `manage.py ledger_verify --fix` to roll them up again.")

    def _rollups(self, *, fix: bool) -> int:
        """The daily rollups against the ledger's rows (budgets/rollups.py);
        with --fix each differing day is rolled up again. Returns how many days differ."""
        problems = rollups_verify()
        for _, words in problems:
            self.stdout.write(("FIXED " if fix else "DRIFT ") + "rollup " + words)
        days = sorted({day for day, _ in problems})
        if fix:
            for day in days:
                day_roll_up(day)
        self.stdout.write(f"Rollups: {len(days)} day(s) differ from the ledger" + (", rolled up again." if fix else ".")
                          if days else "Rollups: every rolled day whose rows are kept equals the ledger.")
        return len(days)
