from django.contrib import admin

from .models import OfflineSyncOperation, SyncChange


@admin.register(OfflineSyncOperation)
class OfflineSyncOperationAdmin(admin.ModelAdmin):
    list_display = ("operation_id", "device_id", "user", "operation_type", "table_name", "priority", "sync_status")
    list_filter = ("sync_status", "operation_type", "table_name", "conflict_detected", "conflict_resolution_strategy")
    search_fields = ("operation_id", "device_id", "record_id", "error_message")
    readonly_fields = ("result", "conflict_metadata")


@admin.register(SyncChange)
class SyncChangeAdmin(admin.ModelAdmin):
    list_display = ("seq", "table_name", "record_id", "operation", "sync_version", "changed_at")
    list_filter = ("table_name", "operation")
    search_fields = ("record_id",)
