"""Celery tasks of the offline sync queue."""

from __future__ import annotations

from celery import shared_task

from . import selectors, services


@shared_task(name="syncqueue.tasks.retry_due_operations")
def retry_due_operations(limit: int = 200) -> dict[str, int]:
    """Retry operations that failed for a transient reason and whose backoff has passed."""
    counts: dict[str, int] = {}
    for operation_pk, tenant in selectors.due_operations(limit=limit):
        status = services.operation_retry(operation_pk=operation_pk, tenant=tenant) or "skipped"
        counts[status] = counts.get(status, 0) + 1
    return counts
