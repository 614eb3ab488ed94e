"""`python manage.py realtime_listen`: run the outbox listener until SIGINT/SIGTERM."""

import asyncio
import signal

from django.core.management.base import BaseCommand

from events.listener import Listener
from harry_realtime.heap import settle_startup_heap


class Command(BaseCommand):
    help = "Fan stored realtime events out to socket topics (one active instance, others stand by)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between safety polls")

    def handle(self, *args, batch_size: int, poll_interval: float, **options):
        settle_startup_heap()
        asyncio.run(self._run(batch_size, poll_interval))

    async def _run(self, batch_size: int, poll_interval: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        listener = Listener(batch_size=batch_size, poll_interval=poll_interval)
        await listener.run(stop)
        self.stdout.write(f"listener stopped: {listener.stats.events} events, {listener.stats.messages} messages")
