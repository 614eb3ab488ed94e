"""Beat jobs that span the apps: alerts and retention."""

from __future__ import annotations

from celery import shared_task

from . import alerts
from .retention import retained_data_purge


@shared_task(name="harry_realtime.evaluate_alerts")
def evaluate_alerts() -> dict[str, int]:
    """Tell schools' admins when a KPI threshold starts or stops being breached."""
    return alerts.alerts_evaluate()


@shared_task(name="harry_realtime.purge_retained_data")
def purge_retained_data() -> dict[str, int]:
    return retained_data_purge()
