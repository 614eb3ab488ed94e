"""Writes of the cultural calendar: prayer reminders.

`prayer_reminders_send(*, at: datetime) -> int` is the beat job's body (every 10 minutes). For
every organization it finds the prayers starting within the school's approaching window after
`at` (10 minutes by default) and, for each online user (realtime_presence not offline and not
expired) who enabled prayer notifications (`prayerTimeNotifications: true` in the
culturalPreferences of an unexpired realtime subscription, as sent on connect), stores one
`system_announcement` realtime event carrying the spec's PrayerTimeNotificationEvent. A
`PrayerReminder` row unique per (user, prayer, local date) makes repeated, overlapping and late
runs send exactly one reminder; a run after the prayer has started sends none for it.

Organizations are listed in the platform context; everything else runs in the school's tenant
context, and each user's reminder is written as that user (the outbox row is theirs to read).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction

from events.models import RealtimeEvent, RealtimeSubscription
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from presence.models import RealtimePresence
from school.models import Organization, User

from . import messages
from .models import PrayerReminder
from .prayer import Location, Method, prayers_starting
from .selectors import context_at, event_cultural_columns, hijri_overrides, location_of, method_for

logger = logging.getLogger(__name__)

APP_BEHAVIOR = {
    "pauseNotifications": True,
    "enableQuietMode": True,
    "showPrayerTimeIndicator": True,
    "adjustUIForPrayer": True,
}


def prayer_reminders_send(*, at: datetime) -> int:
    """Store the due prayer reminders of every organization; returns how many were new."""
    with dangerously_platform_context():
        organization_ids = list(Organization.objects.order_by("id").values_list("id", flat=True))
    sent = 0
    for organization_id in organization_ids:
        try:
            sent += _remind_organization(organization_id, at)
        except Exception:
            # One school's bad location must not stop the others' reminders.
            logger.exception("prayer reminders failed for organization %s", organization_id)
    return sent


def _remind_organization(organization_id, at: datetime) -> int:
    with tenant_context(Tenant(organization_id=organization_id)):
        organization = Organization.objects.get(pk=organization_id)
        location, method = location_of(organization), method_for(organization)
        due = prayers_starting(at, at + timedelta(minutes=method.approaching_minutes), location, method)
        if not due:
            return 0
        online = RealtimePresence.objects.filter(organization_id=organization_id, expires_at__gt=at).exclude(
            status="offline"
        )
        users = list(User.objects.filter(pk__in=online.values("user_id"), is_active=True).order_by("id"))
        overrides = hijri_overrides(location.country)
    context = context_at(at, location, method, overrides)
    plan = _Plan(organization=organization, location=location, method=method, context=context, at=at)
    return sum(_remind_user(plan, user, due) for user in users)


@dataclass(frozen=True)
class _Plan:
    organization: Organization
    location: Location
    method: Method
    context: dict
    at: datetime


def _wants_prayer_notifications(user: User, at: datetime) -> bool:
    return RealtimeSubscription.objects.filter(
        user_id=user.pk, expires_at__gt=at, cultural_preferences__prayerTimeNotifications=True
    ).exists()


def _remind_user(plan: _Plan, user: User, due: list[tuple[str, datetime]]) -> int:
    sent = 0
    with tenant_context(Tenant(organization_id=plan.organization.pk, user_id=user.pk, role=user.role)):
        if not _wants_prayer_notifications(user, plan.at):
            return 0
        for prayer, prayer_at in due:
            try:
                with transaction.atomic():
                    reminder = PrayerReminder.objects.create(
                        organization=plan.organization,
                        user=user,
                        prayer=prayer,
                        prayer_date=prayer_at.date(),
                        prayer_at=prayer_at,
                    )
            except IntegrityError:
                continue  # already reminded by an earlier or concurrent run
            reminder.event = _store_reminder_event(plan, user, prayer, prayer_at)
            reminder.save(update_fields=["event"])
            sent += 1
    return sent


def reminder_payload(
    organization: Organization, user: User, prayer: str, prayer_at: datetime, *, at: datetime, context: dict
) -> dict:
    """The spec's PrayerTimeNotificationEvent for one user (texts in their language; the message
    in all four)."""
    language = messages.normalize_language(user.language)
    minutes = max(0, round((prayer_at - at).total_seconds() / 60))
    clock = prayer_at.strftime("%H:%M")
    message_params = {"prayer": messages.PRAYER_NAMES[prayer], "time": clock, "minutes": minutes}

    def texts(items) -> list[str]:
        return [messages.translated(item, language) for item in items]

    return {
        "type": "prayer_time_reminder",
        "eventType": "system_announcement",
        "timestamp": int(at.timestamp() * 1000),
        "payload": {
            "organizationId": str(organization.pk),
            "prayerName": prayer,
            "prayerTime": clock,
            "timeUntilPrayer": minutes,
            "title": messages.multilingual(messages.REMINDER_TITLE),
            "message": messages.multilingual(messages.REMINDER_MESSAGE, **message_params),
            "greeting": {
                "formal": messages.translated(messages.GREETING_FORMAL, language),
                "casual": messages.translated(
                    messages.RAMADAN_GREETING if context["ramadan_mode"] else messages.GREETING_CASUAL, language
                ),
            },
            "islamicGuidance": {
                "preparationSuggestions": texts(messages.PREPARATION_SUGGESTIONS),
                "respectfulBehavior": texts(messages.RESPECTFUL_BEHAVIOR),
                "postPrayerActions": texts(messages.POST_PRAYER_ACTIONS),
            },
            "appBehavior": APP_BEHAVIOR,
        },
        "metadata": {
            "calculatedForTimezone": organization.timezone,
            "islamicCalendarDate": context["hijri_date"],
            "ramadanContext": context["ramadan_mode"],
        },
    }


def _store_reminder_event(plan: _Plan, user: User, prayer: str, prayer_at: datetime) -> RealtimeEvent:
    cultural, islamic = event_cultural_columns(plan.context)
    payload = reminder_payload(plan.organization, user, prayer, prayer_at, at=plan.at, context=plan.context)
    return RealtimeEvent.objects.create(
        organization=plan.organization,
        event_type="system_announcement",
        event_category="system",
        priority="medium",
        event_payload=payload,
        event_metadata={"prayer": prayer, "prayer_at": prayer_at.isoformat(), "timezone": plan.location.timezone},
        target_user=user,
        target_user_type=user.role,
        broadcast_scope="individual",
        cultural_context=cultural,
        islamic_calendar_context=islamic,
        language_preference=messages.normalize_language(user.language),
        scheduled_for=plan.at,
        # A reminder is pointless once the prayer window has closed.
        expires_at=prayer_at + timedelta(minutes=plan.method.prayer_window_minutes),
    )
