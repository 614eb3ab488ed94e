"""The outbox (read-only: the pipeline writes it) for school staff, scoped by row-level security,
and the Announcements page (events/admin_announcements.py). Connections are listed with presence
(presence/admin.py)."""

from django.contrib import admin

from events.admin_announcements import AnnouncementAdmin
from events.models import Announcement, RealtimeEvent
from harry_realtime.admin import ReadOnlyAdmin

admin.site.register(Announcement, AnnouncementAdmin)


@admin.register(RealtimeEvent)
class RealtimeEventAdmin(ReadOnlyAdmin):
    list_display = (
        "seq",
        "event_type",
        "priority",
        "broadcast_scope",
        "target",
        "source_table",
        "delivery_status",
        "delivery_attempts",
        "created_at",
        "processed_at",
    )
    list_filter = ("delivery_status", "event_type", "priority", "event_category", "broadcast_scope", "source_table")
    search_fields = ("=seq", "=source_record_id", "target_user__username", "target_user__full_name", "event_type")
    list_select_related = ("target_user", "target_group")
    date_hierarchy = "created_at"
    ordering = ("-seq",)

    @admin.display(description="target")
    def target(self, event: RealtimeEvent) -> str:
        return str(event.target_user or event.target_group or event.broadcast_scope)
