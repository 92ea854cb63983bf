"""Export every persona's route in the seed's persona map format."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from personas.services import persona_map_export


class Command(BaseCommand):
    help = "Print the persona map as JSON, or write it to --output PATH."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--output", "-o", default="")

    def handle(self, *args, output: str, **options) -> None:
        text = json.dumps(persona_map_export(), indent=2) + "\n"
        if output:
            Path(output).write_text(text)
            self.stderr.write(f"Wrote {output}.")
        else:
            self.stdout.write(text, ending="")
