"""realtime_presence: who is online, mirrored from the Redis presence state for REST and admin."""

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from events.models import USER_TYPES, _choices, _one_of
from harry_realtime.models import UUIDModel

STATUSES = ["online", "away", "busy", "in_class", "break", "prayer", "offline"]
PLATFORMS = ["ios", "android", "web"]
CONNECTION_QUALITIES = ["excellent", "good", "poor", "offline"]
PRAYER_STATUSES = ["normal", "approaching_prayer", "in_prayer", "post_prayer"]
PRAYERS = ["fajr", "dhuhr", "asr", "maghrib", "isha"]


def _in_one_hour():
    return timezone.now() + timezone.timedelta(hours=1)


class RealtimePresence(UUIDModel):
    organization = models.ForeignKey("school.Organization", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey("school.User", on_delete=models.CASCADE, related_name="+")
    user_type = models.TextField(choices=_choices(USER_TYPES), verbose_name=_("user type"))
    user_name = models.TextField()
    status = models.TextField(
        choices=_choices(STATUSES), default="online", db_default="online", verbose_name=_("status")
    )
    activity = models.TextField(null=True, blank=True)
    custom_status = models.TextField(null=True, blank=True)
    current_screen = models.TextField(null=True, blank=True)
    current_group = models.ForeignKey(
        "school.Group",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("current group"),
    )
    current_lesson_id = models.UUIDField(null=True, blank=True)
    device_id = models.TextField()
    platform = models.TextField(choices=_choices(PLATFORMS), null=True, blank=True, verbose_name=_("platform"))
    app_version = models.TextField(null=True, blank=True)
    connection_quality = models.TextField(
        choices=_choices(CONNECTION_QUALITIES), null=True, blank=True, verbose_name=_("connection quality")
    )
    prayer_time_status = models.TextField(
        choices=_choices(PRAYER_STATUSES), null=True, blank=True, verbose_name=_("prayer time status")
    )
    current_prayer = models.TextField(choices=_choices(PRAYERS), null=True, blank=True)
    last_seen = models.DateTimeField(default=timezone.now, db_default=Now())
    session_start = models.DateTimeField(default=timezone.now, db_default=Now())
    status_changed_at = models.DateTimeField(default=timezone.now, db_default=Now())
    expires_at = models.DateTimeField(default=_in_one_hour)

    class Meta:
        verbose_name = _("presence")
        verbose_name_plural = _("presence")
        db_table = "realtime_presence"
        constraints = [
            models.UniqueConstraint(fields=["user", "device_id"], name="realtime_presence_user_device"),
            _one_of("user_type", USER_TYPES, "realtime_presence_user_type"),
            _one_of("status", STATUSES, "realtime_presence_status"),
            _one_of("platform", PLATFORMS, "realtime_presence_platform"),
            _one_of("connection_quality", CONNECTION_QUALITIES, "realtime_presence_connection_quality"),
            _one_of("prayer_time_status", PRAYER_STATUSES, "realtime_presence_prayer_time_status"),
            _one_of("current_prayer", PRAYERS, "realtime_presence_current_prayer"),
        ]
        indexes = [
            # now() is not allowed in index predicates; the spec's `expires_at > now()` and
            # `expires_at <= now()` predicates become key columns.
            models.Index(fields=["organization", "status", "expires_at"], name="idx_presence_org_status"),
            models.Index(
                fields=["current_group", "activity"], name="idx_presence_group_activity", condition=~Q(status="offline")
            ),
            models.Index(fields=["prayer_time_status", "current_prayer"], name="idx_presence_prayer_context"),
            models.Index(fields=["expires_at"], name="idx_presence_cleanup"),
        ]

    def __str__(self) -> str:
        return f"{self.user_name} on {self.device_id}: {self.status}"
