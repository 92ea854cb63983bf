"""Run batch jobs (`/v1/batches`): the worker of gateway/batch_worker.py, as a
long-running process beside the gateway. Several may run at once, on one
machine or many; a worker that dies leaves its requests to the others (or to
the next one started) once its lease runs out. SIGTERM / Ctrl-C stop it
after the requests in flight have finished."""

from __future__ import annotations

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from budgets.ledger import writer
from gateway.batch_worker import BatchWorker


class Command(BaseCommand):
    help = "Run the requests of batch jobs through the gateway's pipeline, a few at a time, until stopped."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--concurrency", type=int, default=settings.EP_BATCH_CONCURRENCY,
                            help="requests run at once (EP_BATCH_CONCURRENCY)")
        parser.add_argument("--lease", type=float, default=settings.EP_BATCH_LEASE_SECONDS,
                            help="seconds before a dead worker's requests are taken over (EP_BATCH_LEASE_SECONDS)")
        parser.add_argument("--poll", type=float, default=settings.EP_BATCH_POLL_SECONDS,
                            help="seconds between looks for new work when idle (EP_BATCH_POLL_SECONDS)")
        parser.add_argument("--until-idle", action="store_true",
                            help="exit once no batch has anything left to run (cron, tests)")

    def handle(self, *args, concurrency: int, lease: float, poll: float, until_idle: bool, **options) -> None:
        if concurrency < 1 or lease <= 0 or poll <= 0:
            raise CommandError("--concurrency must be at least 1, --lease and --poll positive.")
        handlers = {endpoint: import_string(path) for endpoint, path in settings.EP_BATCH_HANDLERS.items()}
        worker = BatchWorker(handlers=handlers, concurrency=concurrency, lease_seconds=lease, poll_seconds=poll)
        asyncio.run(self._run(worker, until_idle))
        writer.flush()
        self.stdout.write(f"Batch worker {worker.id} stopped.")

    async def _run(self, worker: BatchWorker, until_idle: bool) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run(until_idle=until_idle)
