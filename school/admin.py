"""Admin for school staff. Rows are scoped by row-level security (AdminTenantMiddleware)."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from . import models


@admin.register(models.Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "country", "timezone", "default_language", "created_at")
    list_filter = ("country", "timezone", "default_language")
    search_fields = ("name", "slug")


@admin.register(models.User)
class UserAdmin(DjangoUserAdmin):
    ordering = ("username",)
    list_display = ("username", "full_name", "role", "organization", "language", "is_active", "is_staff")
    list_filter = ("role", "language", "is_active", "is_staff", "organization")
    search_fields = ("username", "full_name", "email")
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Profile", {"fields": ("full_name", "email", "organization", "role", "language")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "organization", "role", "password1", "password2")}),
    )


@admin.register(models.Teacher)
class TeacherAdmin(admin.ModelAdmin):
    list_display = ("full_name", "subject", "user", "is_active", "created_at")
    list_filter = ("is_active", "subject")
    search_fields = ("full_name", "user__username")


class EnrollmentInline(admin.TabularInline):
    model = models.StudentGroupEnrollment
    extra = 0
    fields = ("organization", "student", "group", "status")


class AssignmentInline(admin.TabularInline):
    model = models.TeacherGroupAssignment
    extra = 0
    fields = ("organization", "teacher", "group", "role", "is_active")


@admin.register(models.Student)
class StudentAdmin(admin.ModelAdmin):
    list_display = ("full_name", "date_of_birth", "status", "user", "sync_version", "last_realtime_sync")
    list_filter = ("status",)
    search_fields = ("full_name", "user__username")
    inlines = [EnrollmentInline]


@admin.register(models.Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ("name", "subject", "level", "is_active", "sync_version")
    list_filter = ("is_active", "subject", "level")
    search_fields = ("name",)
    inlines = [AssignmentInline]


@admin.register(models.StudentGroupEnrollment)
class EnrollmentAdmin(admin.ModelAdmin):
    list_display = ("student", "group", "status", "enrolled_at")
    list_filter = ("status", "group")
    search_fields = ("student__full_name", "group__name")


@admin.register(models.TeacherGroupAssignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("teacher", "group", "role", "is_active", "deleted_at")
    list_filter = ("is_active", "role", "group")
    search_fields = ("teacher__full_name", "group__name")


@admin.register(models.Attendance)
class AttendanceAdmin(admin.ModelAdmin):
    list_display = ("attendance_date", "student", "group", "status", "teacher", "marked_offline", "sync_status")
    list_filter = ("status", "sync_status", "marked_offline", "marking_method", "attendance_date", "group")
    search_fields = ("student__full_name", "group__name", "notes")
    date_hierarchy = "attendance_date"


@admin.register(models.StudentRanking)
class StudentRankingAdmin(admin.ModelAdmin):
    list_display = ("student", "current_rank", "current_level", "total_points", "coins", "position_change_delta")
    list_filter = ("current_level", "celebration_triggered")
    search_fields = ("student__full_name",)


@admin.register(models.Achievement)
class AchievementAdmin(admin.ModelAdmin):
    list_display = ("name", "category", "rarity", "points_reward", "coins_reward")
    list_filter = ("category", "rarity")
    search_fields = ("name", "description")


@admin.register(models.StudentAchievement)
class StudentAchievementAdmin(admin.ModelAdmin):
    list_display = ("student", "achievement", "earned_at", "coins_awarded", "bonus_points_awarded")
    list_filter = ("achievement",)
    search_fields = ("student__full_name", "achievement__name")


@admin.register(models.HomeTask)
class HomeTaskAdmin(admin.ModelAdmin):
    list_display = ("title", "student", "task_type", "difficulty", "due_date", "grading_status", "ai_generated")
    list_filter = ("task_type", "difficulty", "grading_status", "ai_generated")
    search_fields = ("title", "student__full_name")


@admin.register(models.FeedbackEntry)
class FeedbackEntryAdmin(admin.ModelAdmin):
    list_display = ("student", "teacher", "feedback_type", "rating", "visible_to_family", "created_at")
    list_filter = ("feedback_type", "visible_to_family")
    search_fields = ("student__full_name", "content")


@admin.register(models.UserRelationship)
class UserRelationshipAdmin(admin.ModelAdmin):
    list_display = ("user_a", "relationship_type", "user_b", "is_active")
    list_filter = ("relationship_type", "is_active")
    search_fields = ("user_a__username", "user_b__username")
