"""Create an API key; the key is printed alone on stdout, once, for scripts."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.models import SCOPES, ApiKey, Team


class Command(BaseCommand):
    help = "Create an API key for a team (created if needed) and print it once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scope", action="append", default=[], dest="scopes",
            help=f"Repeatable; one of {', '.join(SCOPES)}. Default: chat.",
        )

    def handle(self, *args, team: str, name: str, scopes: list[str], **options) -> None:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise CommandError(f"Unknown scope(s) {', '.join(unknown)}; choose from {', '.join(SCOPES)}.")
        team_obj, created = Team.objects.get_or_create(name=team)
        if created:
            self.stderr.write(f"Team '{team}' created.")
        _, raw = ApiKey.issue(team=team_obj, name=name, scopes=sorted(set(scopes)) or ["chat"])
        self.stdout.write(raw)
