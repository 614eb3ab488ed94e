"""Reads of the notifications app. Callers run them inside a tenant (or the platform) context."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from notifications.models import DeviceToken
from school.models import User


def device_tokens_of(*, user: User) -> QuerySet[DeviceToken]:
    """The user's own active devices (admins' RLS view is wider; this list is personal)."""
    return DeviceToken.objects.filter(user_id=user.pk, is_active=True).order_by("-last_registered_at")


def push_delivery_stats(notifications: QuerySet) -> dict:
    """Delivery rate: reached a device (sent/delivered) among pushes whose outcome is known.
    Open rate: opened among those that reached a device."""
    counts = notifications.aggregate(
        total=Count("id"),
        reached=Count("id", filter=Q(delivery_status__in=["sent", "delivered"])),
        failed=Count("id", filter=Q(delivery_status="failed")),
        expired=Count("id", filter=Q(delivery_status="expired")),
        pending=Count("id", filter=Q(delivery_status="pending")),
        opened=Count("id", filter=Q(opened_at__isnull=False)),
        acted=Count("id", filter=Q(action_taken__isnull=False)),
    )
    settled = counts["reached"] + counts["failed"] + counts["expired"]
    counts["delivery_rate"] = round(100 * counts["reached"] / settled, 1) if settled else None
    counts["open_rate"] = round(100 * counts["opened"] / counts["reached"], 1) if counts["reached"] else None
    return counts
