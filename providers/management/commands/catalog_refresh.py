"""Refresh the model catalog of every enabled provider (or one): its list-models
endpoint, completed from the bundled genai-prices data (providers/catalog.py).

    python manage.py catalog_refresh [--provider NAME]
"""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand, CommandError

from providers import catalog
from providers.models import Provider


class Command(BaseCommand):
    help = "Refresh the model catalog from each provider's model list and the genai-prices data."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--provider", help="only this provider (by name)")

    def handle(self, *args, provider: str | None = None, **options) -> None:
        providers = Provider.objects.filter(enabled=True).order_by("name")
        if provider:
            providers = Provider.objects.filter(name=provider)
            if not providers:
                raise CommandError(f"No provider named '{provider}'.")
        for each in providers:
            listed, error = asyncio.run(catalog.listings(each))
            source, found = catalog.entries(each.kind, listed)
            refresh = catalog.catalog_save(actor=None, provider=each, source=source, found=found, list_error=error)
            self.stdout.write(f"{each.name}: {refresh.summary()}")
