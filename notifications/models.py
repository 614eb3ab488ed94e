"""push_notifications: what reaches a device when no socket does; device tokens; per-device deliveries."""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from events.models import _choices, _one_of
from harry_realtime.models import TenantModel

NOTIFICATION_TYPES = [
    "ranking_update",
    "task_assigned",
    "achievement_earned",
    "attendance_reminder",
    "teacher_message",
    "system_alert",
    "prayer_time",
]
PRIORITIES = ["low", "normal", "high", "urgent"]
# A realtime event's priority (low, medium, high, critical) as a push priority, and back.
EVENT_PRIORITY_TO_PUSH = {"low": "low", "medium": "normal", "high": "high", "critical": "urgent"}
PUSH_PRIORITY_TO_EVENT = {value: key for key, value in EVENT_PRIORITY_TO_PUSH.items()}
DELIVERY_METHODS = ["push", "in_app", "email"]
DELIVERY_STATUSES = ["pending", "sent", "delivered", "failed", "expired"]


def _push_only() -> list[str]:
    """The spec's column default `{push}`, for ORM writes as well as SQL ones."""
    return ["push"]


def _in_24_hours():
    return timezone.now() + timezone.timedelta(hours=24)


class PushNotification(TenantModel):
    realtime_event = models.ForeignKey(
        "events.RealtimeEvent", on_delete=models.SET_NULL, null=True, blank=True, related_name="push_notifications"
    )
    notification_type = models.TextField(choices=_choices(NOTIFICATION_TYPES), verbose_name=_("notification type"))
    target_user = models.ForeignKey("school.User", on_delete=models.CASCADE, related_name="+")
    target_device_tokens = ArrayField(models.TextField(), default=list, blank=True)
    title_en = models.TextField()
    title_uz = models.TextField(null=True, blank=True)
    title_ru = models.TextField(null=True, blank=True)
    title_ar = models.TextField(null=True, blank=True)
    body_en = models.TextField()
    body_uz = models.TextField(null=True, blank=True)
    body_ru = models.TextField(null=True, blank=True)
    body_ar = models.TextField(null=True, blank=True)
    cultural_context = models.JSONField(default=dict, db_default={}, blank=True)
    islamic_greeting = models.BooleanField(default=False, db_default=False, verbose_name=_("islamic greeting"))
    prayer_time_aware = models.BooleanField(default=True, db_default=True, verbose_name=_("prayer time aware"))
    priority = models.TextField(
        choices=_choices(PRIORITIES), default="normal", db_default="normal", verbose_name=_("priority")
    )
    delivery_method = ArrayField(
        models.TextField(), default=_push_only, db_default=Value(["push"], ArrayField(models.TextField()))
    )
    scheduled_for = models.DateTimeField(default=timezone.now, db_default=Now())
    expires_at = models.DateTimeField(default=_in_24_hours)
    ios_configuration = models.JSONField(default=dict, db_default={}, blank=True)
    android_configuration = models.JSONField(default=dict, db_default={}, blank=True)
    delivery_status = models.TextField(
        choices=_choices(DELIVERY_STATUSES), default="pending", db_default="pending", verbose_name=_("delivery status")
    )
    delivery_attempts = models.IntegerField(default=0, db_default=0)
    max_delivery_attempts = models.IntegerField(default=3, db_default=3)
    opened_at = models.DateTimeField(null=True, blank=True)
    action_taken = models.TextField(null=True, blank=True)
    action_taken_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)

    class Meta:
        verbose_name = _("push notification")
        verbose_name_plural = _("push notifications")
        db_table = "push_notifications"
        constraints = [
            _one_of("notification_type", NOTIFICATION_TYPES, "push_notifications_type"),
            _one_of("priority", PRIORITIES, "push_notifications_priority"),
            models.CheckConstraint(
                condition=Q(delivery_method__contained_by=DELIVERY_METHODS), name="push_notifications_delivery_method"
            ),
            _one_of("delivery_status", DELIVERY_STATUSES, "push_notifications_delivery_status"),
            # One push per recipient per event, however often the pipeline hands the event over.
            models.UniqueConstraint(
                fields=["realtime_event", "target_user"],
                condition=Q(realtime_event__isnull=False),
                name="uniq_push_notifications_event_user",
            ),
        ]
        indexes = [
            # now() is not allowed in index predicates: the spec's `expires_at > now()` becomes a key.
            models.Index(
                fields=["delivery_status", "scheduled_for", "expires_at"], name="idx_push_notifications_delivery"
            ),
            models.Index(
                fields=["target_user", "notification_type", "delivery_status"], name="idx_push_notifications_target"
            ),
            models.Index(
                fields=["realtime_event"],
                name="idx_push_notifications_realtime",
                condition=Q(realtime_event__isnull=False),
            ),
            models.Index(fields=["islamic_greeting", "prayer_time_aware"], name="idx_push_notifications_cultural"),
        ]

    def title_in(self, language: str) -> str:
        return getattr(self, f"title_{language}", None) or self.title_en

    def body_in(self, language: str) -> str:
        return getattr(self, f"body_{language}", None) or self.body_en

    def __str__(self) -> str:
        return f"{self.title_en} → {self.target_user} ({self.delivery_status})"


PLATFORMS = ["ios", "android", "web"]
LANGUAGES = ["en", "uz", "ru", "ar"]


class DeviceToken(TenantModel):
    """A provider token of one app install. At most one active row per token, across all schools:
    a phone that signs in as someone else stops receiving the previous user's pushes."""

    user = models.ForeignKey("school.User", on_delete=models.CASCADE, related_name="device_tokens")
    platform = models.TextField(choices=_choices(PLATFORMS), verbose_name=_("platform"))
    # FCM registration token, APNs device token (hex), or a Web Push subscription as JSON.
    token = models.TextField()
    app_version = models.TextField(null=True, blank=True)
    language = models.TextField(choices=_choices(LANGUAGES), null=True, blank=True, verbose_name=_("language"))
    is_active = models.BooleanField(default=True, db_default=True, verbose_name=_("active"))
    last_registered_at = models.DateTimeField(default=timezone.now, db_default=Now())
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivation_reason = models.TextField(null=True, blank=True)

    class Meta:
        verbose_name = _("device token")
        verbose_name_plural = _("device tokens")
        db_table = "push_device_tokens"
        constraints = [
            _one_of("platform", PLATFORMS, "push_device_tokens_platform"),
            _one_of("language", LANGUAGES, "push_device_tokens_language"),
            models.UniqueConstraint(
                fields=["token"], condition=Q(is_active=True), name="uniq_push_device_active_token"
            ),
        ]
        indexes = [models.Index(fields=["user", "is_active"], name="idx_push_device_tokens_user")]

    def __str__(self) -> str:
        return f"{self.platform}:{self.token[:16]}…"


DELIVERY_ROW_STATUSES = ["pending", "sending", "sent", "failed", "invalid_token", "expired", "unconfirmed"]


class PushDelivery(TenantModel):
    """One notification to one device: the record that makes a re-run task skip what was sent.

    `sending` is committed before the provider call, so a worker that dies mid-call leaves a
    claimed row that no later run sends again (it ends as `unconfirmed` after the lease).
    """

    notification = models.ForeignKey(PushNotification, on_delete=models.CASCADE, related_name="deliveries")
    device = models.ForeignKey(DeviceToken, on_delete=models.CASCADE, related_name="deliveries")
    status = models.TextField(
        choices=_choices(DELIVERY_ROW_STATUSES), default="pending", db_default="pending", verbose_name=_("status")
    )
    attempts = models.IntegerField(default=0, db_default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_default=Now())
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    provider = models.TextField(blank=True, default="", verbose_name=_("provider"))
    provider_message_id = models.TextField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)

    class Meta:
        verbose_name = _("push delivery")
        verbose_name_plural = _("push deliveries")
        db_table = "push_deliveries"
        constraints = [
            _one_of("status", DELIVERY_ROW_STATUSES, "push_deliveries_status"),
            models.UniqueConstraint(fields=["notification", "device"], name="uniq_push_delivery_device"),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="idx_push_deliveries_due"),
        ]

    def __str__(self) -> str:
        return f"{self.notification.title_en} → {self.device} ({self.status})"
