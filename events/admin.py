from django.contrib import admin

from events.models import RealtimeEvent


@admin.register(RealtimeEvent)
class RealtimeEventAdmin(admin.ModelAdmin):
    list_display = (
        "seq",
        "event_type",
        "priority",
        "organization",
        "source_table",
        "delivery_status",
        "created_at",
        "processed_at",
    )
    list_filter = ("event_type", "event_category", "priority", "delivery_status", "broadcast_scope", "source_table")
    search_fields = ("=seq", "=source_record_id", "=target_user__username", "event_type")
    readonly_fields = ("seq", "processed_at", "created_at", "updated_at")
    ordering = ("-seq",)
