"""Celery tasks of the cultural calendar (thin: the rules are in services)."""

from celery import shared_task
from django.utils import timezone

from .services import prayer_reminders_send


@shared_task(name="culture.send_prayer_reminders")
def send_prayer_reminders() -> int:
    return prayer_reminders_send(at=timezone.now())
