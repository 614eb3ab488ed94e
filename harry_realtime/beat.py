"""Celery beat's scheduler with a liveness heartbeat for the container health check."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler


class HeartbeatScheduler(DatabaseScheduler):
    """django-celery-beat's database scheduler that touches `BEAT_HEARTBEAT_FILE` on every tick.

    Beat ticks at least every few seconds (the scheduler's maximum interval), so a stale file
    means a stuck or dead scheduler loop, which a live process alone would not show.
    """

    def tick(self, *args, **kwargs) -> float:
        interval = super().tick(*args, **kwargs)
        if settings.BEAT_HEARTBEAT_FILE:
            Path(settings.BEAT_HEARTBEAT_FILE).touch()
        return interval
