"""Staff views of connections and presence, scoped by row-level security (AdminTenantMiddleware).
Both are written by the gateway and read-only here."""

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.utils import timezone

from events.models import RealtimeSubscription
from harry_realtime.admin import ReadOnlyAdmin
from school.models import Group

from .models import RealtimePresence


class OnlineNowFilter(admin.SimpleListFilter):
    title = "online now"
    parameter_name = "online"

    def lookups(self, request, model_admin):
        return [("yes", "Online now"), ("no", "Not online")]


class PresenceOnlineFilter(OnlineNowFilter):
    def queryset(self, request, queryset):
        online = {"expires_at__gt": timezone.now()}
        if self.value() == "yes":
            return queryset.exclude(status="offline").filter(**online)
        if self.value() == "no":
            return queryset.exclude(pk__in=queryset.exclude(status="offline").filter(**online).values("pk"))
        return queryset


class ConnectionOnlineFilter(OnlineNowFilter):
    def queryset(self, request, queryset):
        cutoff = timezone.now() - timedelta(seconds=settings.PRESENCE_CONNECTION_TIMEOUT_SECONDS)
        online = {"connection_status": "connected", "last_heartbeat__gte": cutoff}
        if self.value() == "yes":
            return queryset.filter(**online)
        if self.value() == "no":
            return queryset.exclude(**online)
        return queryset


class ChannelGroupFilter(admin.SimpleListFilter):
    """Connections on a group's attendance channel."""

    title = "group"
    parameter_name = "group"

    def lookups(self, request, model_admin):
        return [(str(g.pk), g.name) for g in Group.objects.order_by("name")]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(channel_name__endswith=f":group_{self.value()}")
        return queryset


@admin.register(RealtimePresence)
class RealtimePresenceAdmin(ReadOnlyAdmin):
    list_display = (
        "user_name",
        "user_type",
        "status",
        "activity",
        "current_group",
        "current_screen",
        "device_id",
        "platform",
        "connection_quality",
        "prayer_time_status",
        "last_seen",
        "expires_at",
    )
    list_filter = (
        PresenceOnlineFilter,
        "status",
        "user_type",
        "current_group",
        "platform",
        "connection_quality",
        "prayer_time_status",
    )
    search_fields = ("user_name", "user__username", "device_id", "activity", "custom_status")
    list_select_related = ("current_group",)
    date_hierarchy = "last_seen"
    ordering = ("-last_seen",)


@admin.register(RealtimeSubscription)
class RealtimeSubscriptionAdmin(ReadOnlyAdmin):
    list_display = (
        "user",
        "device_id",
        "channel_name",
        "subscription_type",
        "connection_status",
        "platform",
        "network_type",
        "battery_level",
        "performance_mode",
        "app_state",
        "connection_quality",
        "heartbeat_interval_ms",
        "last_heartbeat",
        "last_event_received",
        "expires_at",
    )
    list_filter = (
        ConnectionOnlineFilter,
        "connection_status",
        "subscription_type",
        ChannelGroupFilter,
        "platform",
        "network_type",
        "performance_mode",
        "app_state",
        "connection_quality",
    )
    search_fields = ("user__username", "user__full_name", "device_id", "session_id", "channel_name", "websocket_id")
    list_select_related = ("user",)
    date_hierarchy = "last_heartbeat"
    ordering = ("-last_heartbeat",)
