"""Import the seed's persona map: {"architect": {"provider", "model", "fallback": [...]}}."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from personas.services import PersonaMapError, persona_map_import


class Command(BaseCommand):
    help = "Import workspace/persona_provider_map.json (or PATH): each persona's route is replaced."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", nargs="?", default="workspace/persona_provider_map.json")

    def handle(self, *args, path: str, **options) -> None:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CommandError(f"No file at {path}.") from None
        except json.JSONDecodeError as error:
            raise CommandError(f"{path} is not valid JSON: {error}") from None
        try:
            result = persona_map_import(data)
        except PersonaMapError as error:
            raise CommandError(str(error)) from None
        for name in result.providers_created:
            self.stderr.write(
                f"Provider '{name}' was not configured: created disabled. Set its credential "
                f"(EP_{name.upper()}_API_KEY then bootstrap, or the dashboard) and enable it."
            )
        self.stdout.write(f"Imported {len(result.personas)} persona(s): {', '.join(result.personas)}.")
