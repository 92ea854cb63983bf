"""A new random dashboard password, printed alone on stdout once (for scripts),
for the first admin unless --username names another user."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import admin_password_reset


class Command(BaseCommand):
    help = "Give a dashboard user (default: admin) a new random password and print it once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        if not get_user_model().objects.filter(username=username).exists():
            raise CommandError(f"No dashboard user '{username}'. Run `manage.py bootstrap` first for 'admin'.")
        password = admin_password_reset(actor=None, username=username)
        self.stderr.write(f"New password for '{username}' (shown once; log in at /login/):")
        self.stdout.write(password)
