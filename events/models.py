"""The outbox (realtime_events) and the device subscriptions (realtime_subscriptions)."""

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import F, Func, Q, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from harry_realtime.models import TenantModel

USER_TYPES = ["student", "teacher", "admin", "parent"]
EVENT_TYPES = [
    "student_ranking_update",
    "attendance_sync",
    "task_assignment",
    "achievement_earned",
    "notification_broadcast",
    "teacher_communication",
    "lesson_progress",
    "system_announcement",
]
EVENT_CATEGORIES = ["educational", "administrative", "communication", "gamification", "system"]
PRIORITIES = ["low", "medium", "high", "critical"]
BROADCAST_SCOPES = ["individual", "group", "organization", "system"]
DELIVERY_STATUSES = ["pending", "sent", "delivered", "failed", "expired"]
DELIVERY_METHODS = ["websocket", "push_notification", "email", "sms"]
LANGUAGES = ["en", "uz", "ru", "ar"]

EVENT_SEQUENCE = "realtime_events_seq"


def _choices(values: list[str]) -> list[tuple[str, str]]:
    return [(v, v) for v in values]


def _one_of(field: str, values: list[str], name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(**{f"{field}__in": values}), name=name)


class RealtimeEvent(TenantModel):
    # Cursor for ordering, replay and polling; a sequence, so raw SQL and triggers get one too.
    seq = models.BigIntegerField(
        unique=True,
        editable=False,
        db_default=Func(Value(EVENT_SEQUENCE), function="nextval", output_field=models.BigIntegerField()),
    )
    event_type = models.TextField(choices=_choices(EVENT_TYPES), verbose_name=_("event type"))
    event_category = models.TextField(choices=_choices(EVENT_CATEGORIES), verbose_name=_("event category"))
    priority = models.TextField(
        choices=_choices(PRIORITIES), default="medium", db_default="medium", verbose_name=_("priority")
    )
    event_payload = models.JSONField()
    event_metadata = models.JSONField(default=dict, db_default={}, blank=True)
    source_table = models.TextField(null=True, blank=True, verbose_name=_("source table"))
    source_record_id = models.UUIDField(null=True, blank=True)
    target_user = models.ForeignKey("school.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    target_user_type = models.TextField(choices=_choices(USER_TYPES), null=True, blank=True)
    target_group = models.ForeignKey("school.Group", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    broadcast_scope = models.TextField(
        choices=_choices(BROADCAST_SCOPES),
        default="individual",
        db_default="individual",
        verbose_name=_("broadcast scope"),
    )
    delivery_status = models.TextField(
        choices=_choices(DELIVERY_STATUSES), default="pending", db_default="pending", verbose_name=_("delivery status")
    )
    delivery_attempts = models.IntegerField(default=0, db_default=0)
    delivery_method = ArrayField(
        models.TextField(), default=list, db_default=Value(["websocket"], ArrayField(models.TextField()))
    )
    cultural_context = models.JSONField(default=dict, db_default={}, blank=True)
    islamic_calendar_context = models.JSONField(default=dict, db_default={}, blank=True)
    language_preference = models.TextField(choices=_choices(LANGUAGES), default="en", db_default="en")
    scheduled_for = models.DateTimeField(default=timezone.now, db_default=Now())
    expires_at = models.DateTimeField(null=True, blank=True)
    # When the listener last handed the event to the channel layer. Replay and catch-up read only
    # events fanned out by then: one not yet fanned out reaches a joined socket live, so a client
    # never gets it by replay on one socket and live again on the next (events/delivery.py).
    fanout_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey("school.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    updated_by = models.ForeignKey("school.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey("school.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        verbose_name = _("realtime event")
        verbose_name_plural = _("realtime events")
        db_table = "realtime_events"
        ordering = ["seq"]
        constraints = [
            _one_of("event_type", EVENT_TYPES, "realtime_events_event_type"),
            _one_of("event_category", EVENT_CATEGORIES, "realtime_events_event_category"),
            _one_of("priority", PRIORITIES, "realtime_events_priority"),
            _one_of("target_user_type", USER_TYPES, "realtime_events_target_user_type"),
            _one_of("broadcast_scope", BROADCAST_SCOPES, "realtime_events_broadcast_scope"),
            _one_of("delivery_status", DELIVERY_STATUSES, "realtime_events_delivery_status"),
            _one_of("language_preference", LANGUAGES, "realtime_events_language"),
            models.CheckConstraint(
                condition=Q(delivery_method__contained_by=DELIVERY_METHODS), name="realtime_events_delivery_method"
            ),
            # A notice made in Python (family notice, deadline reminder, announcement) names what
            # it is about in `event_metadata.notice_key`; each person gets it once, however often
            # the producer runs (events/notices.py inserts with ON CONFLICT DO NOTHING).
            models.UniqueConstraint(
                F("target_user"),
                KT("event_metadata__notice_key"),
                condition=Q(event_metadata__has_key="notice_key"),
                name="uniq_realtime_events_notice",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "event_type"], name="idx_realtime_events_org_type"),
            # Events made in Python for one record (an announcement's per-recipient copies).
            models.Index(
                fields=["source_record_id"],
                name="idx_realtime_events_made_for",
                condition=Q(source_table__isnull=True, source_record_id__isnull=False),
            ),
            models.Index(
                fields=["target_user", "delivery_status"],
                name="idx_realtime_events_target_user",
                condition=Q(deleted_at__isnull=True),
            ),
            models.Index(
                fields=["scheduled_for"],
                name="idx_realtime_events_scheduled",
                condition=Q(delivery_status="pending", deleted_at__isnull=True),
            ),
            models.Index(
                F("priority").desc(),
                "delivery_status",
                name="idx_realtime_events_priority_delivery",
                condition=Q(deleted_at__isnull=True),
            ),
            GinIndex(fields=["event_payload"], name="idx_realtime_events_payload_gin"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event_type} ({self.delivery_status})"


SUBSCRIPTION_TYPES = ["dashboard", "attendance", "tasks", "notifications", "rankings", "feedback", "presence"]
CONNECTION_STATUSES = ["connected", "disconnected", "reconnecting", "failed"]
PERFORMANCE_MODES = ["battery_saver", "standard", "high_performance"]
APP_STATES = ["foreground", "background"]
CONNECTION_QUALITIES = ["excellent", "good", "poor", "offline"]


def _in_24_hours():
    return timezone.now() + timezone.timedelta(hours=24)


class RealtimeSubscription(TenantModel):
    user = models.ForeignKey("school.User", on_delete=models.CASCADE, related_name="+")
    user_type = models.TextField(choices=_choices(USER_TYPES), verbose_name=_("user type"))
    device_id = models.TextField()
    session_id = models.TextField()
    subscription_type = models.TextField(choices=_choices(SUBSCRIPTION_TYPES), verbose_name=_("subscription type"))
    subscription_filters = models.JSONField(default=dict, db_default={}, blank=True)
    target_entities = ArrayField(models.TextField(), default=list, blank=True)
    channel_name = models.TextField()
    websocket_id = models.TextField(null=True, blank=True)
    connection_status = models.TextField(
        choices=_choices(CONNECTION_STATUSES),
        default="connected",
        db_default="connected",
        verbose_name=_("connection status"),
    )
    last_ping = models.DateTimeField(default=timezone.now, db_default=Now())
    last_event_received = models.DateTimeField(null=True, blank=True)
    app_version = models.TextField(null=True, blank=True)
    platform = models.TextField(
        choices=_choices(["ios", "android", "web"]), null=True, blank=True, verbose_name=_("platform")
    )
    network_type = models.TextField(
        choices=_choices(["wifi", "cellular", "offline"]), null=True, blank=True, verbose_name=_("network type")
    )
    battery_level = models.IntegerField(null=True, blank=True)
    cultural_preferences = models.JSONField(default=dict, db_default={}, blank=True)
    performance_mode = models.TextField(
        choices=_choices(PERFORMANCE_MODES),
        default="standard",
        db_default="standard",
        verbose_name=_("performance mode"),
    )
    # The rest of the connection profile (events/profiles.py) and the heartbeat interval it gets.
    app_state = models.TextField(choices=_choices(APP_STATES), null=True, blank=True)
    connection_quality = models.TextField(choices=_choices(CONNECTION_QUALITIES), null=True, blank=True)
    heartbeat_interval_ms = models.IntegerField(null=True, blank=True)
    offline_sync_enabled = models.BooleanField(default=True, db_default=True)
    expires_at = models.DateTimeField(default=_in_24_hours)
    last_heartbeat = models.DateTimeField(default=timezone.now, db_default=Now())

    class Meta:
        verbose_name = _("connection channel")
        verbose_name_plural = _("connection channels")
        db_table = "realtime_subscriptions"
        constraints = [
            _one_of("user_type", USER_TYPES, "realtime_subs_user_type"),
            _one_of("subscription_type", SUBSCRIPTION_TYPES, "realtime_subs_subscription_type"),
            _one_of("connection_status", CONNECTION_STATUSES, "realtime_subs_connection_status"),
            # The spec allows ios and android; the web admin and browser clients connect as "web".
            _one_of("platform", ["ios", "android", "web"], "realtime_subs_platform"),
            _one_of("network_type", ["wifi", "cellular", "offline"], "realtime_subs_network_type"),
            models.CheckConstraint(
                condition=Q(battery_level__gte=0, battery_level__lte=100), name="realtime_subs_battery_level"
            ),
            _one_of("performance_mode", PERFORMANCE_MODES, "realtime_subs_performance_mode"),
            _one_of("app_state", APP_STATES, "realtime_subs_app_state"),
            _one_of("connection_quality", CONNECTION_QUALITIES, "realtime_subs_connection_quality"),
            models.CheckConstraint(
                condition=Q(heartbeat_interval_ms__gt=0), name="realtime_subs_heartbeat_interval_ms"
            ),
        ]
        indexes = [
            # The spec's predicate `expires_at > now()` is not allowed in an index (now() is not
            # immutable); expires_at becomes a key column instead.
            models.Index(fields=["user", "connection_status", "expires_at"], name="idx_realtime_subs_user_active"),
            models.Index(fields=["organization", "subscription_type"], name="idx_realtime_subs_org_type"),
            models.Index(
                fields=["channel_name"], name="idx_realtime_subs_channel", condition=Q(connection_status="connected")
            ),
            models.Index(
                fields=["last_heartbeat"],
                name="idx_realtime_subs_heartbeat",
                condition=Q(connection_status="connected"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel_name} on {self.device_id} ({self.connection_status})"


ANNOUNCEMENT_KINDS = ["system_announcement", "emergency_alert"]
ANNOUNCEMENT_AUDIENCES = ["all", "student", "teacher", "parent", "admin"]


class Announcement(TenantModel):
    """A school-wide message from an admin (events/announcements.py): one `realtime_events` row per
    recipient carries it (`source_record_id` = this id), so each person's live delivery, replay,
    acknowledgement and push are tracked like any individual event."""

    kind = models.TextField(choices=_choices(ANNOUNCEMENT_KINDS), verbose_name=_("kind"))
    audience = models.TextField(choices=_choices(ANNOUNCEMENT_AUDIENCES), verbose_name=_("audience"))
    # MultilingualText: {"en": ..., "uz": ..., "ru": ..., "ar": ...}; "en" always present.
    title = models.JSONField()
    message = models.JSONField()
    recipient_count = models.IntegerField(default=0, db_default=0)
    expires_at = models.DateTimeField()
    created_by = models.ForeignKey("school.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        db_table = "realtime_announcements"
        ordering = ["-created_at"]
        verbose_name = _("announcement")
        verbose_name_plural = _("announcements")
        constraints = [
            _one_of("kind", ANNOUNCEMENT_KINDS, "realtime_announcements_kind"),
            _one_of("audience", ANNOUNCEMENT_AUDIENCES, "realtime_announcements_audience"),
        ]
        indexes = [models.Index(fields=["organization", "-created_at"], name="idx_realtime_announcements_org")]

    def __str__(self) -> str:
        return str(self.title.get("en", ""))
