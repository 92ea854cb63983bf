"""Ask tool servers which tools they have now (tools/catalog.py), record their
health, and print what changed: new tools awaiting approval, changed definitions
pending approval, tools no longer listed. Nothing a server lists reaches a model
before an operator approves it. Exits 1 when a server could not be listed, so a
cron job notices."""

import asyncio

from django.core.management.base import BaseCommand, CommandError

from tools.catalog import RefreshReport, refresh_report
from tools.models import ToolServer


async def _refresh_all(names: list[str] | None) -> list[RefreshReport]:
    servers = ToolServer.objects.filter(enabled=True)
    if names:
        servers = ToolServer.objects.filter(name__in=names)
    return [await refresh_report(server) async for server in servers]


class Command(BaseCommand):
    help = "Refresh the tool lists of the enabled tool servers (or of --server NAME) and print what changed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--server", action="append", metavar="NAME",
                            help="Only this server (may be repeated); disabled servers too.")

    def handle(self, *args, server: list[str] | None = None, **options) -> None:
        if server:
            unknown = sorted(set(server) - set(ToolServer.objects.filter(name__in=server)
                                               .values_list("name", flat=True)))
            if unknown:
                raise CommandError(f"No tool server named {', '.join(unknown)}.")
        reports = asyncio.run(_refresh_all(server))
        for report in reports:
            self.stdout.write(report.summary())
        if not reports:
            self.stdout.write("No enabled tool servers.")
        failed = [r.server for r in reports if r.error]
        if failed:
            raise CommandError(f"Could not list the tools of {', '.join(failed)}.")
