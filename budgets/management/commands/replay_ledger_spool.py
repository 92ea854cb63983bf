"""Replay the ledger's spool into the database now (budgets/recovery.py): for an
operator once the database is back and no gateway process runs to do it (each
process also replays in the background)."""

from django.core.management.base import BaseCommand, CommandError

from budgets import spool
from budgets.recovery import spool_replay


class Command(BaseCommand):
    help = "Write the settlements waiting in EP_SPOOL_DIR to the ledger (skipping any already there)."

    def handle(self, *args, **options) -> None:
        done = spool_replay()
        stats = spool.stats()
        self.stdout.write(f"Settled {done.rows} spooled row(s), {done.skipped} already in the ledger, "
                          f"{done.rejected} set aside; {stats['rows']} waiting, "
                          f"{stats['rejected_rows']} set aside in all ({spool.directory()}).")
        if done.waiting:
            raise CommandError("The database is still unreachable: the rest stays in the spool.")
