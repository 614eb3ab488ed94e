"""Admin for school staff. Rows are scoped by row-level security (AdminTenantMiddleware); which
lists a school admin sees comes from the school-admin permission group (school/staff.py)."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from harry_realtime.admin import TenantAdmin

from . import models, services


@admin.register(models.Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "country", "timezone", "default_language", "created_at")
    list_filter = ("country", "timezone", "default_language")
    search_fields = ("name", "slug")


@admin.register(models.User)
class UserAdmin(TenantAdmin, DjangoUserAdmin):
    ordering = ("username",)
    list_display = ("username", "full_name", "role", "language", "is_active", "is_staff", "last_login")
    list_filter = ("role", "is_active", "is_staff", "language")
    search_fields = ("username", "full_name", "email")
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Profile", {"fields": ("full_name", "email", "organization", "role", "language")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "organization", "role", "password1", "password2")}),
    )
    # Platform-wide powers that only the platform superuser may see or grant.
    platform_only_fields = ("is_superuser", "groups", "user_permissions")

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser:
            return fieldsets
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f not in self.platform_only_fields]})
            for name, options in fieldsets
        ]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if obj.organization_id and obj.is_staff and obj.role == models.Role.ADMIN:
            services.school_admin_grant(user=obj)


@admin.register(models.Teacher)
class TeacherAdmin(TenantAdmin):
    list_display = ("full_name", "subject", "user", "is_active", "created_at")
    list_filter = ("is_active", "subject")
    search_fields = ("full_name", "user__username")
    list_select_related = ("user",)


class EnrollmentInline(admin.TabularInline):
    model = models.StudentGroupEnrollment
    extra = 0
    fields = ("organization", "student", "group", "status")


class AssignmentInline(admin.TabularInline):
    model = models.TeacherGroupAssignment
    extra = 0
    fields = ("organization", "teacher", "group", "role", "is_active")


@admin.register(models.Student)
class StudentAdmin(TenantAdmin):
    list_display = ("full_name", "date_of_birth", "status", "user", "sync_version", "last_realtime_sync")
    list_filter = ("status",)
    search_fields = ("full_name", "user__username")
    list_select_related = ("user",)
    inlines = [EnrollmentInline]


@admin.register(models.Group)
class GroupAdmin(TenantAdmin):
    list_display = ("name", "subject", "level", "is_active", "sync_version")
    list_filter = ("is_active", "subject", "level")
    search_fields = ("name",)
    inlines = [AssignmentInline]


@admin.register(models.StudentGroupEnrollment)
class EnrollmentAdmin(TenantAdmin):
    list_display = ("student", "group", "status", "enrolled_at")
    list_filter = ("status", "group")
    search_fields = ("student__full_name", "group__name")
    list_select_related = ("student", "group")


@admin.register(models.TeacherGroupAssignment)
class AssignmentAdmin(TenantAdmin):
    list_display = ("teacher", "group", "role", "is_active", "deleted_at")
    list_filter = ("is_active", "role", "group")
    search_fields = ("teacher__full_name", "group__name")
    list_select_related = ("teacher", "group")


@admin.register(models.Attendance)
class AttendanceAdmin(TenantAdmin):
    list_display = (
        "attendance_date",
        "student",
        "group",
        "status",
        "teacher",
        "marked_by",
        "marking_method",
        "marked_offline",
        "sync_status",
    )
    list_filter = ("status", "attendance_date", "group", "marking_method", "marked_offline", "sync_status")
    search_fields = ("student__full_name", "group__name", "teacher__full_name", "notes")
    date_hierarchy = "attendance_date"
    list_select_related = ("student", "group", "teacher", "marked_by")
    ordering = ("-attendance_date", "group__name", "student__full_name")


@admin.register(models.StudentRanking)
class StudentRankingAdmin(TenantAdmin):
    list_display = ("student", "current_rank", "current_level", "total_points", "coins", "position_change_delta")
    list_filter = ("current_level", "celebration_triggered")
    search_fields = ("student__full_name",)
    list_select_related = ("student",)


@admin.register(models.Achievement)
class AchievementAdmin(TenantAdmin):
    list_display = ("name", "category", "rarity", "points_reward", "coins_reward")
    list_filter = ("category", "rarity")
    search_fields = ("name", "description")


@admin.register(models.StudentAchievement)
class StudentAchievementAdmin(TenantAdmin):
    list_display = ("student", "achievement", "earned_at", "coins_awarded", "bonus_points_awarded")
    list_filter = ("achievement",)
    search_fields = ("student__full_name", "achievement__name")
    list_select_related = ("student", "achievement")
    date_hierarchy = "earned_at"


@admin.register(models.HomeTask)
class HomeTaskAdmin(TenantAdmin):
    list_display = ("title", "student", "task_type", "difficulty", "due_date", "grading_status", "ai_generated")
    list_filter = ("task_type", "difficulty", "grading_status", "ai_generated")
    search_fields = ("title", "student__full_name")
    list_select_related = ("student",)
    date_hierarchy = "due_date"


@admin.register(models.FeedbackEntry)
class FeedbackEntryAdmin(TenantAdmin):
    list_display = ("student", "teacher", "feedback_type", "rating", "visible_to_family", "created_at")
    list_filter = ("feedback_type", "visible_to_family")
    search_fields = ("student__full_name", "content")
    list_select_related = ("student", "teacher")


@admin.register(models.UserRelationship)
class UserRelationshipAdmin(TenantAdmin):
    list_display = ("user_a", "relationship_type", "user_b", "is_active")
    list_filter = ("relationship_type", "is_active")
    search_fields = ("user_a__username", "user_b__username")
    list_select_related = ("user_a", "user_b")
