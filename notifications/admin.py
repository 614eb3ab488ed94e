"""Admin for pushes, device tokens and per-device deliveries; scoped by RLS (AdminTenantMiddleware)."""

from django.contrib import admin, messages

from harry_realtime.admin import ReadOnlyAdmin, TenantAdmin

from . import selectors, services
from .models import DeviceToken, PushDelivery, PushNotification


class PushDeliveryInline(admin.TabularInline):
    model = PushDelivery
    extra = 0
    can_delete = False
    fields = ("device", "status", "attempts", "next_attempt_at", "sent_at", "provider_message_id", "error_message")
    readonly_fields = fields


@admin.register(PushNotification)
class PushNotificationAdmin(TenantAdmin):
    list_display = (
        "title_en",
        "notification_type",
        "target_user",
        "priority",
        "delivery_status",
        "delivery_attempts",
        "scheduled_for",
        "sent_at",
        "opened_at",
        "action_taken",
    )
    list_filter = (
        "delivery_status",
        "notification_type",
        "priority",
        "deliveries__provider",
        "islamic_greeting",
        "prayer_time_aware",
    )
    search_fields = ("title_en", "body_en", "target_user__username", "target_user__full_name", "error_message")
    date_hierarchy = "created_at"
    list_select_related = ("target_user",)
    raw_id_fields = ("target_user", "realtime_event")
    readonly_fields = ("delivery_attempts", "sent_at", "failed_at", "opened_at", "action_taken", "action_taken_at")
    inlines = [PushDeliveryInline]
    actions = ["resend"]
    ordering = ("-created_at",)

    def has_change_permission(self, request, obj=None) -> bool:
        # A push that left the queue is history: resend it as a new one instead.
        if obj is not None and obj.delivery_status != "pending":
            return False
        return super().has_change_permission(request, obj)

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data["push_stats"] = selectors.push_delivery_stats(changelist.queryset)
        return response

    @admin.action(description="Resend the selected pushes (as new pushes)")
    def resend(self, request, queryset):
        copies = [services.push_notification_resend(notification=n) for n in queryset]
        self.message_user(request, f"{len(copies)} push(es) queued again as new notifications.", messages.SUCCESS)


@admin.register(DeviceToken)
class DeviceTokenAdmin(TenantAdmin):
    list_display = ("__str__", "user", "platform", "language", "app_version", "is_active", "last_registered_at")
    list_filter = ("platform", "is_active", "language")
    search_fields = ("user__username", "user__full_name", "app_version")
    raw_id_fields = ("user",)
    readonly_fields = ("deactivated_at", "deactivation_reason", "last_registered_at")


@admin.register(PushDelivery)
class PushDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("notification", "device", "status", "attempts", "next_attempt_at", "sent_at", "provider")
    list_filter = ("status", "provider")
    date_hierarchy = "next_attempt_at"
    search_fields = ("notification__title_en", "provider_message_id", "error_message")
    list_select_related = ("notification", "device")
    raw_id_fields = ("notification", "device")
