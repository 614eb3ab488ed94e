"""Offline operations as the devices uploaded them, scoped by row-level security. An operation
that was applied (completed) is history and read-only; the change log is always read-only."""

from django.contrib import admin

from harry_realtime.admin import ReadOnlyAdmin, TenantAdmin

from .models import OfflineSyncOperation, SyncChange


@admin.register(OfflineSyncOperation)
class OfflineSyncOperationAdmin(TenantAdmin):
    list_display = (
        "operation_id",
        "device_id",
        "user",
        "operation_type",
        "table_name",
        "priority",
        "sync_status",
        "conflict_detected",
        "retry_count",
        "created_at",
    )
    list_filter = ("sync_status", "operation_type", "table_name", "conflict_detected", "conflict_resolution_strategy")
    search_fields = ("operation_id", "device_id", "=record_id", "user__username", "user__full_name", "error_message")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = ("result", "conflict_metadata")

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.sync_status == "completed":
            return False
        return super().has_change_permission(request, obj)

    def has_add_permission(self, request) -> bool:
        return False  # devices upload operations; a hand-made row would have no device behind it


@admin.register(SyncChange)
class SyncChangeAdmin(ReadOnlyAdmin):
    list_display = ("seq", "table_name", "record_id", "operation", "sync_version", "changed_at")
    list_filter = ("table_name", "operation")
    search_fields = ("=record_id",)
    date_hierarchy = "changed_at"
    ordering = ("-seq",)
