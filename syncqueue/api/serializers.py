"""Request shapes of the sync endpoints (spec: QueueSyncRequest, ConflictResolutionRequest).

A batch is refused as a whole only when the envelope is wrong; a malformed operation inside a
good envelope fails on its own, so the rest of the batch still applies.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from harry_realtime import inputguard, jsonutil
from syncqueue.apply import IncomingOperation
from syncqueue.models import STRATEGIES
from syncqueue.policy import BATTERY_ADJUSTMENT

OPERATION_TYPES = ("INSERT", "UPDATE", "DELETE")
MAX_ID_LENGTH = 200
# An operation sits two levels down in the batch (object, operations list): its own nesting
# counts from there towards the guard's MAX_DEPTH.
OPERATION_DEPTH = 2


class QueueSyncRequestSerializer(serializers.Serializer):
    deviceId = serializers.CharField(max_length=MAX_ID_LENGTH)
    operations = serializers.ListField(child=serializers.JSONField(), allow_empty=False)
    culturalContext = serializers.DictField(required=False)
    performanceMetrics = serializers.DictField(required=False)
    batteryMode = serializers.ChoiceField(choices=sorted(BATTERY_ADJUSTMENT), required=False, default="standard")


class ConflictResolutionRequestSerializer(serializers.Serializer):
    conflictId = serializers.UUIDField()
    resolution = serializers.ChoiceField(choices=["client_wins", "server_wins", "teacher_authority", "merge_fields"])
    teacherOverride = serializers.BooleanField(required=False, default=False)
    adminApproval = serializers.BooleanField(required=False, default=False)
    culturalConsiderations = serializers.DictField(required=False, default=dict)


def _failed(operation_id: Any, code: str, message: str, details: Any = None) -> dict:
    error = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"id": operation_id if isinstance(operation_id, str) else None, "status": "failed", "error": error}


def parse_operation(raw: Any, *, batch_context: dict) -> IncomingOperation | dict:
    """One OfflineOperation as an IncomingOperation, or its failed result when malformed."""
    if not isinstance(raw, dict):
        return _failed(None, "malformed_operation", "An operation is a JSON object.")
    problem = inputguard.problem_of(raw, depth=OPERATION_DEPTH)
    if problem is not None:
        # A value no column can carry (a NUL, a lone surrogate, an integer beyond 64 bits) fails
        # this operation only; its id is echoed only when the id itself is clean.
        op_id = raw.get("id") if problem.path != "id" else None
        return _failed(op_id, problem.code, problem.message, {"path": problem.path})
    op_id = raw.get("id")
    if not isinstance(op_id, str) or not op_id or len(op_id) > MAX_ID_LENGTH:
        return _failed(op_id, "missing_field", "Every operation carries the device's own id.", ["id"])
    missing = [k for k in ("operation", "tableName", "timestamp") if raw.get(k) in (None, "")]
    operation_type = raw.get("operation")
    if operation_type in ("INSERT", "UPDATE") and not isinstance(raw.get("data"), dict):
        missing.append("data")
    if missing:
        return _failed(op_id, "missing_field", "Required operation fields are missing.", missing)
    if operation_type not in OPERATION_TYPES:
        return _failed(op_id, "invalid_operation", "operation is INSERT, UPDATE or DELETE.")
    if not isinstance(raw["tableName"], str):
        return _failed(op_id, "unknown_table", "tableName is a table name.")
    record_id = raw.get("recordId")
    if record_id is not None:
        try:
            record_id = uuid.UUID(str(record_id))
        except ValueError:
            return _failed(op_id, "invalid_record_id", "recordId is not a UUID.")
    try:
        timestamp = parse_datetime(raw["timestamp"]) if isinstance(raw["timestamp"], str) else None
    except ValueError:  # well formed, but no such date or time (month 13)
        timestamp = None
    if timestamp is None:
        return _failed(op_id, "invalid_timestamp", "timestamp is an ISO 8601 date-time.")
    if not inputguard.date_in_range(timestamp):
        return _failed(op_id, "date_out_of_range", inputguard.DATE_RANGE_MESSAGE, ["timestamp"])
    if timezone.is_naive(timestamp):
        timestamp = timezone.make_aware(timestamp, timezone.get_default_timezone())
    strategy = raw.get("conflictResolutionStrategy") or "teacher_authority"
    if strategy not in STRATEGIES:
        return _failed(op_id, "invalid_strategy", f"conflictResolutionStrategy is one of {', '.join(STRATEGIES)}.")
    priority = raw.get("priority", 5)
    version = raw.get("syncVersion", raw.get("sync_version"))
    if not isinstance(priority, int) or isinstance(priority, bool):
        return _failed(op_id, "invalid_priority", "priority is an integer.")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        return _failed(op_id, "invalid_sync_version", "syncVersion is an integer.")
    cultural = raw.get("culturalContext") or {}
    old_data = raw.get("oldData")
    if not isinstance(cultural, dict) or (old_data is not None and not isinstance(old_data, dict)):
        return _failed(op_id, "malformed_operation", "culturalContext and oldData are objects.")
    return IncomingOperation(
        operation_id=op_id,
        operation_type=operation_type,
        table_name=raw["tableName"],
        record_id=record_id,
        data=raw.get("data") or {},
        local_timestamp=timestamp,
        requested_priority=priority,
        strategy=strategy,
        client_sync_version=version,
        offline_data_hash=raw.get("offlineDataHash"),
        old_data=old_data,
        cultural_context=cultural,
        prayer_time_context=cultural.get("prayerTimeContext") or batch_context.get("prayerTimeContext"),
        islamic_calendar_date=cultural.get("islamicDate") or batch_context.get("islamicDate"),
        size_bytes=len(jsonutil.dumps(raw, default=str)),
    )


# -- Documentation of the shapes (the views parse operations leniently and build the answers) ----


class OfflineOperationSerializer(serializers.Serializer):
    """One queued operation (spec OfflineOperation); a malformed one fails on its own."""

    id = serializers.CharField(max_length=MAX_ID_LENGTH, help_text="the device's own operation id")
    operation = serializers.ChoiceField(choices=OPERATION_TYPES)
    tableName = serializers.CharField()
    recordId = serializers.UUIDField(required=False, allow_null=True)
    data = serializers.DictField(required=False, help_text="the row's fields (INSERT, UPDATE)")
    oldData = serializers.DictField(required=False, allow_null=True)
    timestamp = serializers.DateTimeField()
    syncVersion = serializers.IntegerField(required=False, allow_null=True)
    priority = serializers.IntegerField(required=False)
    conflictResolutionStrategy = serializers.ChoiceField(choices=STRATEGIES, required=False, allow_null=True)
    offlineDataHash = serializers.CharField(required=False, allow_null=True)
    culturalContext = serializers.DictField(required=False, allow_null=True)


class QueueSyncRequestDocSerializer(QueueSyncRequestSerializer):
    operations = OfflineOperationSerializer(many=True, allow_empty=False)

    class Meta:
        ref_name = "QueueSyncRequest"


class OperationResultSerializer(serializers.Serializer):
    id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=["completed", "conflict", "failed", "duplicate", "pending"])
    tableName = serializers.CharField(required=False)
    recordId = serializers.CharField(required=False, allow_null=True)
    priority = serializers.IntegerField(required=False)
    record = serializers.DictField(required=False, allow_null=True)
    syncVersion = serializers.IntegerField(required=False, allow_null=True)
    conflict = serializers.DictField(required=False, allow_null=True)
    error = serializers.DictField(required=False, help_text="{code, message, details?} of a failed operation")
    original = serializers.DictField(required=False, help_text="the stored result of a duplicate")


class QueueSyncResponseSerializer(serializers.Serializer):
    deviceId = serializers.CharField()
    results = OperationResultSerializer(many=True)
    appliedOrder = serializers.ListField(child=serializers.CharField())
    summary = serializers.DictField(child=serializers.IntegerField(), help_text="count per result status")


class SyncStatusResponseSerializer(serializers.Serializer):
    deviceId = serializers.CharField()
    pendingOperations = serializers.IntegerField()
    conflictsDetected = serializers.IntegerField()
    lastSuccessfulSync = serializers.DateTimeField(allow_null=True)
    estimatedSyncTime = serializers.IntegerField(help_text="milliseconds")
    culturalBlockers = serializers.DictField(child=serializers.BooleanField())
    networkOptimization = serializers.DictField()


class ChangeSerializer(serializers.Serializer):
    table = serializers.CharField()
    id = serializers.UUIDField()
    op = serializers.ChoiceField(choices=["upsert", "delete"])
    syncVersion = serializers.IntegerField(allow_null=True)
    record = serializers.DictField(required=False, help_text="upserts only")


class SyncChangesResponseSerializer(serializers.Serializer):
    changes = ChangeSerializer(many=True)
    nextCursor = serializers.CharField()
    hasMore = serializers.BooleanField()


class SyncChangesQuerySerializer(serializers.Serializer):
    cursor = serializers.CharField(required=False, help_text="nextCursor of the previous page")
    tables = serializers.CharField(required=False, help_text="comma-separated table names; default all")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=200)


class PendingConflictsResponseSerializer(serializers.Serializer):
    conflicts = serializers.ListField(child=serializers.DictField())
    totalCount = serializers.IntegerField()
    culturalGuidance = serializers.DictField()


class ConflictResolutionResponseSerializer(serializers.Serializer):
    conflictId = serializers.UUIDField()
    status = serializers.CharField()
    resolution = serializers.CharField()
    result = serializers.DictField(allow_null=True)
    record = serializers.DictField(allow_null=True)
    syncVersion = serializers.IntegerField(allow_null=True)
