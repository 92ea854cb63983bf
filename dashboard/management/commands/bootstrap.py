"""Migrate, create providers from the environment, demo personas, and on the first
run a dashboard admin and a demo API key (printed once). Idempotent."""

from __future__ import annotations

import secrets

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import ApiKey, Team
from personas.services import demo_personas_ensure
from providers.services import demo_provider_ensure, providers_from_env
from tools.catalog import builtin_server, refresh_server

# How the README runs management commands: with the project's own Python.
MANAGE = ".venv/bin/python manage.py"


class Command(BaseCommand):
    help = "Prepare the database: migrate, providers from EP_* env, demo personas, first admin and key."

    def handle(self, *args, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        with transaction.atomic():
            demo = demo_provider_ensure()
            env = providers_from_env()
            personas = demo_personas_ensure(demo)
            login = self._first_admin()
            key = self._first_key()
        # The built-in tools ship with the code: an upgrade that adds one lists it here.
        async_to_sync(refresh_server)(async_to_sync(builtin_server)())
        for name in env.created:
            self.stdout.write(f"Provider '{name}' created from the environment.")
        for name in env.updated:
            self.stdout.write(f"Provider '{name}' updated from the environment.")
        if personas:
            self.stdout.write(f"Demo personas created: {', '.join(personas)} (routed to the demo provider).")
        self._first_run_or_hints(login, key)

    def _first_run_or_hints(self, login: str | None, key: str | None) -> None:
        """The login and key once; on later runs, how to get new ones (README, "Day two")."""
        if login:
            self.stdout.write(self.style.SUCCESS(f"Dashboard login (shown once): user 'admin', password '{login}'"))
        else:
            self.stdout.write("Dashboard user 'admin' exists. Lost its password? "
                              f"{MANAGE} reset_admin_password")
        if key:
            self.stdout.write(self.style.SUCCESS("API key for team 'demo' (shown once); paste this line to use it:"))
            self.stdout.write(f"export EP_API_KEY={key}")
        else:
            self.stdout.write("Need an API key? export EP_API_KEY=$("
                              f"{MANAGE} create_api_key --team demo --name laptop)")

    def _first_admin(self) -> str | None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return None
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "admin@localhost", password)
        return password

    def _first_key(self) -> str | None:
        if ApiKey.objects.exists():
            return None
        team, _ = Team.objects.get_or_create(name="demo")
        _, raw = ApiKey.issue(team=team, name="quick start")
        return raw
