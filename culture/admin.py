"""Admin for the cultural calendar. School staff edit their school's prayer settings (scoped by
row-level security); announced Hijri month starts are country data only the platform superuser
sees and edits (the school-admin group has no permission on them)."""

from django.contrib import admin

from harry_realtime.admin import ReadOnlyAdmin, TenantAdmin

from .models import HijriMonthOverride, PrayerCalculationSettings, PrayerReminder


@admin.register(PrayerCalculationSettings)
class PrayerCalculationSettingsAdmin(TenantAdmin):
    list_display = (
        "organization",
        "fajr_angle",
        "isha_angle",
        "asr_method",
        "dhuhr_adjustment",
        "maghrib_adjustment",
        "prayer_window_minutes",
        "updated_at",
    )
    list_filter = ("asr_method",)
    search_fields = ("organization__name", "organization__slug")
    fieldsets = (
        (None, {"fields": ("organization",)}),
        ("Method", {"fields": ("fajr_angle", "isha_angle", "asr_method")}),
        (
            "Minute adjustments",
            {
                "fields": (
                    "fajr_adjustment",
                    "sunrise_adjustment",
                    "dhuhr_adjustment",
                    "asr_adjustment",
                    "maghrib_adjustment",
                    "isha_adjustment",
                )
            },
        ),
        ("Prayer windows", {"fields": ("approaching_minutes", "prayer_window_minutes", "post_prayer_minutes")}),
    )


@admin.register(HijriMonthOverride)
class HijriMonthOverrideAdmin(admin.ModelAdmin):
    list_display = ("country", "hijri_year", "hijri_month", "gregorian_start", "source", "updated_at")
    list_filter = ("country", "hijri_year", "hijri_month")
    search_fields = ("country", "source")
    ordering = ("country", "-gregorian_start")


@admin.register(PrayerReminder)
class PrayerReminderAdmin(ReadOnlyAdmin):
    list_display = ("user", "prayer", "prayer_date", "prayer_at", "created_at")
    list_filter = ("prayer", "prayer_date")
    search_fields = ("user__username", "user__full_name")
    list_select_related = ("user",)
    date_hierarchy = "prayer_date"
