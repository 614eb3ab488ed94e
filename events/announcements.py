"""Announcements: an admin's message to the whole school or to one role (`POST
/api/realtime/announcements`, the admin's *Announcements* page).

- `system_announcement`: to the audience's users, live on their `notifications:org_{org}:role_{role}`
  topic; like any individual event it is held during the school's prayer window, and handed to
  push when no socket of the recipient took it within the grace period.
- `emergency_alert`: critical — never held for prayer (there are no other quiet hours), to every
  role including parents (audience `all` only), live and as a push at once.

One notice (events/notices.py) per recipient carries it, in the recipient's language when the
admin wrote one (else English), so every person's delivery is tracked: the delivery summary
counts recipients reached live (`sent`/`delivered`), by push, expired, and not yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from culture.messages import translated
from events.models import LANGUAGES, Announcement, RealtimeEvent
from events.notices import Notice, notices_store
from events.topics import notifications_topic
from harry_realtime.errors import Forbidden, Invalid
from notifications.from_events import push_notification_create_for_event
from school.models import Role, User

KIND_LABELS = {"system_announcement": _("School announcement"), "emergency_alert": _("Emergency alert")}
ROLES = ("student", "teacher", "parent", "admin")


def multilingual_text(value: str | Mapping[str, str]) -> dict[str, str]:
    """One English string, or `{en, uz?, ru?, ar?}` with English required."""
    if isinstance(value, str):
        return {"en": value}
    return {language: value[language] for language in LANGUAGES if value.get(language)}


def _recipients(organization_id, audience: str) -> list[User]:
    users = User.objects.filter(organization_id=organization_id, is_active=True, role__in=ROLES)
    if audience != "all":
        users = users.filter(role=audience)
    return list(users.only("pk", "role", "language").order_by("pk"))


@transaction.atomic
def announcement_create(
    *,
    sender: User,
    kind: str,
    audience: str,
    title: str | Mapping[str, str],
    message: str | Mapping[str, str],
    expires_in: timedelta = timedelta(hours=72),
) -> Announcement:
    """Store the announcement and one notice per recipient; an emergency alert's pushes too.
    Runs in the admin's tenant context; sockets and pushes are sent after commit."""
    if sender.role != Role.ADMIN:
        raise Forbidden("forbidden", "Only a school's admins send announcements.")
    if kind == "emergency_alert" and audience != "all":
        raise Invalid(
            "emergency_alert_audience", "An emergency alert goes to the whole school: audience must be 'all'."
        )
    title_texts, message_texts = multilingual_text(title), multilingual_text(message)
    recipients = _recipients(sender.organization_id, audience)
    announcement = Announcement.objects.create(
        organization_id=sender.organization_id,
        kind=kind,
        audience=audience,
        title=title_texts,
        message=message_texts,
        created_by=sender,
        expires_at=timezone.now() + expires_in,
    )
    emergency = kind == "emergency_alert"
    notices = [
        Notice(
            organization_id=sender.organization_id,
            recipient_id=user.pk,
            recipient_role=user.role,
            language=user.language,
            topic=notifications_topic(sender.organization_id, user.role),
            event=kind,
            kind=kind,
            notice_key=f"announcement:{announcement.pk}",
            event_type="system_announcement",
            event_category="system",
            priority="critical" if emergency else "medium",
            payload={
                "announcementId": str(announcement.pk),
                "audience": audience,
                "label": translated(KIND_LABELS[kind], user.language),
            },
            texts={"title": title_texts, "message": message_texts},
            source_record_id=announcement.pk,
            created_by_id=sender.pk,
            expires_in=expires_in,
        )
        for user in recipients
    ]
    events = notices_store(notices)
    announcement.recipient_count = len(events)
    announcement.save(update_fields=["recipient_count", "updated_at"])
    if emergency:
        _push_now(events)
    return announcement


def _push_now(events: list[RealtimeEvent]) -> None:
    for event in events:
        push_notification_create_for_event(event=event, offline_user_ids=[event.target_user_id])


def announcement_delivery(announcement: Announcement) -> dict[str, int]:
    """How many recipients, reached live (a socket of theirs took it), reached by push (a provider
    accepted it or the app opened it), expired unreached, and not yet reached."""
    events = RealtimeEvent.objects.filter(source_table__isnull=True, source_record_id=announcement.pk)
    live = Q(delivery_status__in=["sent", "delivered"])
    pushed = Q(push_notifications__delivery_status__in=["sent", "delivered"])
    counts = {
        "recipients": events.count(),
        "live": events.filter(live).count(),
        "push": events.filter(pushed).values("pk").distinct().count(),
        "reached": events.filter(live | pushed).values("pk").distinct().count(),
        "expired": events.filter(delivery_status="expired").exclude(pushed).values("pk").distinct().count(),
    }
    counts["notYet"] = counts["recipients"] - counts.pop("reached") - counts["expired"]
    return counts
