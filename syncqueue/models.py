"""offline_sync_queue: every write a device queued offline, applied exactly once."""

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from events.models import _choices, _one_of
from harry_realtime.models import TenantModel

OPERATION_TYPES = ["INSERT", "UPDATE", "DELETE", "BATCH"]
SYNC_STATUSES = ["pending", "processing", "completed", "failed", "conflict"]
STRATEGIES = ["client_wins", "server_wins", "teacher_authority", "admin_override", "merge_fields", "prompt_user"]


class OfflineSyncOperation(TenantModel):
    user = models.ForeignKey("school.User", on_delete=models.CASCADE, related_name="+")
    device_id = models.TextField()
    # The device's own id for the operation: (user, device_id, operation_id) makes uploads
    # idempotent. The user (and so the school) is part of the key: the same ids from two users
    # are two operations, and no one can take another user's ids.
    operation_id = models.TextField()
    operation_type = models.TextField(choices=_choices(OPERATION_TYPES), verbose_name=_("operation type"))
    table_name = models.TextField(verbose_name=_("table name"))
    record_id = models.UUIDField(null=True, blank=True)
    old_data = models.JSONField(null=True, blank=True)
    new_data = models.JSONField(null=True, blank=True)
    client_sync_version = models.BigIntegerField(null=True, blank=True)
    # The record hash the device last saw, for tables that carry `offline_data_hash` (students).
    offline_data_hash = models.TextField(null=True, blank=True)
    priority = models.IntegerField(default=5, db_default=5, verbose_name=_("priority"))
    sync_status = models.TextField(
        choices=_choices(SYNC_STATUSES), default="pending", db_default="pending", verbose_name=_("sync status")
    )
    retry_count = models.IntegerField(default=0, db_default=0)
    max_retries = models.IntegerField(default=3, db_default=3)
    last_retry_at = models.DateTimeField(null=True, blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    conflict_resolution_strategy = models.TextField(
        choices=_choices(STRATEGIES),
        default="teacher_authority",
        db_default="teacher_authority",
        verbose_name=_("conflict resolution strategy"),
    )
    conflict_detected = models.BooleanField(default=False, db_default=False, verbose_name=_("conflict detected"))
    conflict_metadata = models.JSONField(default=dict, db_default={}, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="The outcome returned to the device")
    cultural_context = models.JSONField(default=dict, db_default={}, blank=True)
    islamic_calendar_date = models.TextField(null=True, blank=True)
    prayer_time_context = models.TextField(null=True, blank=True)
    local_timestamp = models.DateTimeField()
    timezone = models.TextField(default="Asia/Tashkent", db_default="Asia/Tashkent", verbose_name=_("timezone"))
    operation_duration_ms = models.IntegerField(null=True, blank=True)
    bandwidth_used_bytes = models.IntegerField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)

    class Meta:
        verbose_name = _("offline sync operation")
        verbose_name_plural = _("offline sync operations")
        db_table = "offline_sync_queue"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "device_id", "operation_id"], name="offline_sync_user_device_operation"
            ),
            _one_of("operation_type", OPERATION_TYPES, "offline_sync_operation_type"),
            models.CheckConstraint(condition=Q(priority__gte=1, priority__lte=10), name="offline_sync_priority"),
            _one_of("sync_status", SYNC_STATUSES, "offline_sync_status"),
            _one_of("conflict_resolution_strategy", STRATEGIES, "offline_sync_strategy"),
        ]
        indexes = [
            models.Index(
                F("priority").desc(),
                "next_retry_at",
                name="idx_offline_sync_priority",
                condition=Q(sync_status="pending"),
            ),
            models.Index(fields=["user", "device_id", "sync_status"], name="idx_offline_sync_user_device"),
            models.Index(
                fields=["conflict_detected", "conflict_resolution_strategy"],
                name="idx_offline_sync_conflicts",
                condition=Q(conflict_detected=True),
            ),
            models.Index(
                fields=["islamic_calendar_date", "prayer_time_context"],
                name="idx_offline_sync_cultural",
                condition=Q(cultural_context__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation_type} {self.table_name} {self.operation_id} from {self.device_id} ({self.sync_status})"


SYNCABLE_TABLES = [
    "students",
    "groups",
    "student_group_enrollments",
    "attendance",
    "student_rankings",
    "student_achievements",
    "home_tasks",
    "feedback_entries",
]


class SyncChange(models.Model):
    """One row per write to a syncable table, written by a trigger: what delta pull reads.

    Deletions (hard, or soft through `deleted_at`) stay here as tombstones after the row is gone.
    `xid` is the writing transaction's id: a reader only hands out changes of transactions older
    than its snapshot's xmin, so a change that commits late is never skipped by a cursor.
    """

    seq = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey("school.Organization", on_delete=models.CASCADE, related_name="+")
    xid = models.BigIntegerField()
    table_name = models.TextField(verbose_name=_("table name"))
    record_id = models.UUIDField()
    operation = models.TextField(choices=_choices(["upsert", "delete"]), verbose_name=_("operation"))
    # Who may see the change once the row itself is gone.
    student_id = models.UUIDField(null=True, blank=True)
    group_id = models.UUIDField(null=True, blank=True)
    sync_version = models.BigIntegerField(null=True, blank=True)
    changed_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name = _("sync change")
        verbose_name_plural = _("sync changes")
        db_table = "sync_changes"
        indexes = [models.Index(fields=["organization", "xid", "seq"], name="idx_sync_changes_cursor")]

    def __str__(self) -> str:
        return f"{self.operation} {self.table_name} {self.record_id}"
