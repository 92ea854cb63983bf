"""Deliver due alert webhooks and release expired reservations (for cron;
gateway processes also do this in the background)."""

from django.core.management.base import BaseCommand

from budgets.alerts import webhooks_deliver_due
from budgets.ledger import reservations_expire


class Command(BaseCommand):
    help = "Retry queued alert webhooks and release budget reservations of dead requests."

    def handle(self, *args, **options) -> None:
        delivered = webhooks_deliver_due()
        released = reservations_expire()
        self.stdout.write(f"Delivered {delivered} webhook(s); released {released} expired reservation(s).")
