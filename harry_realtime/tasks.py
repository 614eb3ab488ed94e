from celery import shared_task

from . import alerts


@shared_task(name="harry_realtime.evaluate_alerts")
def evaluate_alerts() -> dict[str, int]:
    """Tell schools' admins when a KPI threshold starts or stops being breached."""
    return alerts.alerts_evaluate()
