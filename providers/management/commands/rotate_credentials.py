"""Re-encrypt provider credentials under the first key of EP_ENCRYPTION_KEYS."""

from django.core.management.base import BaseCommand

from providers.services import credentials_rotate


class Command(BaseCommand):
    help = "Re-encrypt stored provider credentials with the newest EP_ENCRYPTION_KEYS key."

    def handle(self, *args, **options) -> None:
        count = credentials_rotate()
        self.stdout.write(f"Re-encrypted {count} credential(s).")
