"""The CRM tables the realtime spec builds on, with the spec's table names."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models import Q
from django.db.models.functions import Cast, Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from harry_realtime.models import SyncVersionedModel, TenantModel, TimestampedModel


class Language(models.TextChoices):
    EN = "en", "English"
    UZ = "uz", "O'zbek"
    RU = "ru", "Русский"
    AR = "ar", "العربية"


class Role(models.TextChoices):
    STUDENT = "student", "Student"
    TEACHER = "teacher", "Teacher"
    ADMIN = "admin", "Admin"
    # The spec's user_type columns know three roles; families sign in too (parents, guardians).
    PARENT = "parent", "Parent"


class Organization(TimestampedModel):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    country = models.CharField(max_length=2, default="UZ", help_text="ISO 3166-1 alpha-2", verbose_name=_("country"))
    latitude = models.DecimalField(max_digits=9, decimal_places=6)
    longitude = models.DecimalField(max_digits=9, decimal_places=6)
    timezone = models.CharField(max_length=64, default="Asia/Tashkent", verbose_name=_("timezone"))
    default_language = models.CharField(
        max_length=2, choices=Language.choices, default=Language.UZ, verbose_name=_("default language")
    )
    settings = models.JSONField(default=dict, blank=True, help_text="School rules and feature flags")

    class Meta:
        verbose_name = _("organization")
        verbose_name_plural = _("organizations")
        db_table = "organizations"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, username: str, password: str | None = None, **fields):
        user = self.model(username=username, email=fields.pop("email", username), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, username: str, password: str | None = None, **fields):
        fields.update(is_staff=True, is_superuser=True, role=Role.ADMIN)
        return self.create_user(username, password, **fields)


class User(AbstractBaseUser, PermissionsMixin, TimestampedModel):
    """A person who signs in: the spec's `auth.users`. Platform superusers have no organization."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="users"
    )
    username = models.CharField(max_length=150, unique=True)
    email = models.EmailField(blank=True)
    full_name = models.CharField(max_length=200, blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.STUDENT, verbose_name=_("role"))
    language = models.CharField(max_length=2, choices=Language.choices, default=Language.UZ, verbose_name=_("language"))
    # A parent's (or guardian's) wish to hear about their children: attendance, tasks, achievements,
    # ranking milestones (events/family.py). The spec's ConnectRequest culturalPreferences.familyEngagement.
    family_engagement = models.BooleanField(default=True, db_default=True)
    is_active = models.BooleanField(default=True, verbose_name=_("active"))
    is_staff = models.BooleanField(default=False, verbose_name=_("staff"))

    objects = UserManager()
    USERNAME_FIELD = "username"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        db_table = "users"
        ordering = ["username"]
        constraints = [
            models.CheckConstraint(
                condition=Q(organization__isnull=False) | Q(is_superuser=True),
                name="users_org_required_unless_platform",
            ),
            # School admins are staff with the school-admin permission group (school/staff.py);
            # the superuser flag is the platform's alone.
            models.CheckConstraint(
                condition=Q(is_superuser=False) | Q(organization__isnull=True),
                name="users_superuser_is_platform_only",
            ),
        ]

    def __str__(self) -> str:
        return self.full_name or self.username


class Teacher(TenantModel):
    user = models.OneToOneField(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="teacher")
    full_name = models.CharField(max_length=200)
    subject = models.CharField(max_length=100, blank=True, verbose_name=_("subject"))
    is_active = models.BooleanField(default=True, verbose_name=_("active"))
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("teacher")
        verbose_name_plural = _("teachers")
        db_table = "teachers"
        ordering = ["full_name"]

    def __str__(self) -> str:
        return self.full_name


def default_realtime_preferences() -> dict:
    """The spec's column default, for ORM writes as well as SQL ones."""
    return {"ranking_updates": True, "task_notifications": True, "achievement_alerts": True}


class Student(SyncVersionedModel):
    class Status(models.TextChoices):
        ACTIVE = "active"
        INACTIVE = "inactive"
        GRADUATED = "graduated"
        SUSPENDED = "suspended"

    user = models.OneToOneField(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="student")
    full_name = models.CharField(max_length=200)
    date_of_birth = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, verbose_name=_("status"))
    # FERPA-sensitive parts, filtered from realtime payloads for non-family, non-educators.
    personal_info = models.JSONField(default=dict, blank=True)
    family_details = models.JSONField(default=dict, blank=True)
    medical_notes = models.TextField(blank=True)
    # The spec's real-time columns.
    last_realtime_sync = models.DateTimeField(default=timezone.now, db_default=Now())
    realtime_preferences = models.JSONField(
        default=default_realtime_preferences, db_default=default_realtime_preferences(), blank=True
    )
    offline_data_hash = models.TextField(null=True, blank=True)

    class Meta:
        verbose_name = _("student")
        verbose_name_plural = _("students")
        db_table = "students"
        ordering = ["full_name"]

    def __str__(self) -> str:
        return self.full_name


class Group(SyncVersionedModel):
    name = models.CharField(max_length=200)
    subject = models.CharField(max_length=100, blank=True, verbose_name=_("subject"))
    level = models.CharField(max_length=50, blank=True, verbose_name=_("level"))
    schedule = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True, verbose_name=_("active"))

    class Meta:
        verbose_name = _("group")
        verbose_name_plural = _("groups")
        db_table = "groups"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class StudentGroupEnrollment(SyncVersionedModel):
    class Status(models.TextChoices):
        ACTIVE = "active"
        WITHDRAWN = "withdrawn"
        COMPLETED = "completed"

    student = models.ForeignKey(Student, on_delete=models.CASCADE, related_name="enrollments")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="enrollments", verbose_name=_("group"))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, verbose_name=_("status"))
    enrolled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("enrollment")
        verbose_name_plural = _("enrollments")
        db_table = "student_group_enrollments"
        constraints = [models.UniqueConstraint(fields=["student", "group"], name="uniq_enrollment")]

    def __str__(self) -> str:
        return f"{self.student} in {self.group}"


class TeacherGroupAssignment(TenantModel):
    teacher = models.ForeignKey(Teacher, on_delete=models.CASCADE, related_name="assignments")
    group = models.ForeignKey(
        Group, on_delete=models.CASCADE, related_name="teacher_assignments", verbose_name=_("group")
    )
    role = models.CharField(max_length=20, default="primary", verbose_name=_("role"))
    is_active = models.BooleanField(default=True, verbose_name=_("active"))
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("teacher assignment")
        verbose_name_plural = _("teacher assignments")
        db_table = "teacher_group_assignments"
        constraints = [models.UniqueConstraint(fields=["teacher", "group"], name="uniq_teacher_group")]

    def __str__(self) -> str:
        return f"{self.teacher} teaches {self.group}"


class AttendanceStatus(models.TextChoices):
    PRESENT = "present"
    ABSENT = "absent"
    LATE = "late"
    EXCUSED = "excused"
    SICK = "sick"
    EMERGENCY = "emergency"
    EARLY_DISMISSAL = "early_dismissal"
    PARTIAL = "partial"


class MarkingMethod(models.TextChoices):
    MANUAL = "manual"
    QR_CODE = "qr_code"
    NFC = "nfc"
    BIOMETRIC = "biometric"
    AUTO = "auto"


class AttendanceSyncStatus(models.TextChoices):
    PENDING = "pending"
    SYNCED = "synced"
    CONFLICT = "conflict"
    FAILED = "failed"


class Attendance(SyncVersionedModel):
    Status = AttendanceStatus
    MarkingMethod = MarkingMethod
    SyncStatus = AttendanceSyncStatus

    student = models.ForeignKey(Student, on_delete=models.CASCADE, related_name="attendance")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="attendance", verbose_name=_("group"))
    teacher = models.ForeignKey(Teacher, on_delete=models.CASCADE, related_name="attendance")
    attendance_date = models.DateField(
        default=timezone.localdate, db_default=Cast(Now(), models.DateField()), verbose_name=_("attendance date")
    )
    status = models.CharField(max_length=20, choices=Status.choices, verbose_name=_("status"))
    check_in_time = models.DateTimeField(null=True, blank=True)
    check_out_time = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True, null=True)
    marked_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+", db_column="marked_by")
    marking_method = models.CharField(
        max_length=20, choices=MarkingMethod.choices, default="manual", verbose_name=_("marking method")
    )
    marked_offline = models.BooleanField(default=False, verbose_name=_("marked offline"))
    sync_status = models.CharField(
        max_length=10, choices=SyncStatus.choices, default="synced", verbose_name=_("sync status")
    )
    offline_timestamp = models.DateTimeField(null=True, blank=True)
    sync_priority = models.IntegerField(default=5)
    prayer_time_context = models.TextField(null=True, blank=True)
    ramadan_consideration = models.BooleanField(default=False)
    cultural_notes = models.TextField(null=True, blank=True)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_column="created_by"
    )
    updated_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_column="updated_by"
    )
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_column="deleted_by"
    )

    class Meta:
        verbose_name = _("attendance record")
        verbose_name_plural = _("attendance")
        db_table = "attendance"
        constraints = [
            models.UniqueConstraint(fields=["student", "group", "attendance_date"], name="uniq_attendance_day"),
            models.CheckConstraint(condition=Q(status__in=AttendanceStatus.values), name="attendance_status"),
            models.CheckConstraint(
                condition=Q(marking_method__in=MarkingMethod.values), name="attendance_marking_method"
            ),
            models.CheckConstraint(
                condition=Q(sync_status__in=AttendanceSyncStatus.values), name="attendance_sync_status"
            ),
        ]
        indexes = [
            models.Index(
                "sync_status",
                models.F("sync_priority").desc(),
                name="idx_attendance_realtime_sync",
                condition=Q(deleted_at__isnull=True),
            ),
            models.Index(
                fields=["group", "attendance_date"],
                name="idx_attendance_group_date",
                condition=Q(deleted_at__isnull=True),
            ),
            models.Index(
                fields=["marked_offline", "offline_timestamp"],
                name="idx_attendance_offline_pending",
                condition=Q(sync_status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.student}, {self.attendance_date}: {self.status}"


class StudentRanking(SyncVersionedModel):
    student = models.OneToOneField(Student, on_delete=models.CASCADE, related_name="ranking")
    current_rank = models.IntegerField()
    current_level = models.IntegerField(default=1, verbose_name=_("current level"))
    total_points = models.IntegerField(default=0)
    coins = models.IntegerField(default=0)
    # The spec's added columns.
    last_position_change = models.DateTimeField(null=True, blank=True)
    position_change_delta = models.IntegerField(default=0, db_default=0)
    celebration_triggered = models.BooleanField(
        default=False, db_default=False, verbose_name=_("celebration triggered")
    )
    ranking_metadata = models.JSONField(default=dict, db_default={}, blank=True)

    class Meta:
        verbose_name = _("ranking")
        verbose_name_plural = _("rankings")
        db_table = "student_rankings"
        ordering = ["current_rank"]

    def __str__(self) -> str:
        return f"{self.student}: rank {self.current_rank}, {self.total_points} points"


class Achievement(TenantModel):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=50, default="academic", verbose_name=_("category"))
    rarity = models.CharField(max_length=20, default="common", verbose_name=_("rarity"))
    points_reward = models.IntegerField(default=0)
    coins_reward = models.IntegerField(default=0)
    icon = models.CharField(max_length=100, blank=True)

    class Meta:
        verbose_name = _("achievement")
        verbose_name_plural = _("achievements")
        db_table = "achievements"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class StudentAchievement(SyncVersionedModel):
    student = models.ForeignKey(Student, on_delete=models.CASCADE, related_name="achievements")
    achievement = models.ForeignKey(
        Achievement, on_delete=models.CASCADE, related_name="awards", verbose_name=_("achievement")
    )
    earned_at = models.DateTimeField(default=timezone.now, db_default=Now())
    coins_awarded = models.IntegerField(default=0)
    bonus_points_awarded = models.IntegerField(default=0)
    awarded_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("awarded achievement")
        verbose_name_plural = _("awarded achievements")
        db_table = "student_achievements"

    def __str__(self) -> str:
        return f"{self.student}: {self.achievement}"


class HomeTask(SyncVersionedModel):
    class TaskType(models.TextChoices):
        READING = "reading"
        WRITING = "writing"
        LISTENING = "listening"
        SPEAKING = "speaking"
        VOCABULARY = "vocabulary"
        QUIZ = "quiz"
        PROJECT = "project"

    class Difficulty(models.TextChoices):
        BEGINNER = "beginner"
        INTERMEDIATE = "intermediate"
        ADVANCED = "advanced"

    class GradingStatus(models.TextChoices):
        NOT_SUBMITTED = "not_submitted"
        SUBMITTED = "submitted"
        GRADING = "grading"
        GRADED = "graded"
        RETURNED = "returned"

    student = models.ForeignKey(Student, on_delete=models.CASCADE, related_name="home_tasks")
    group = models.ForeignKey(
        Group, on_delete=models.CASCADE, null=True, blank=True, related_name="home_tasks", verbose_name=_("group")
    )
    teacher = models.ForeignKey(Teacher, on_delete=models.SET_NULL, null=True, blank=True, related_name="home_tasks")
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    task_type = models.CharField(
        max_length=20, choices=TaskType.choices, default=TaskType.WRITING, verbose_name=_("task type")
    )
    difficulty = models.CharField(
        max_length=20, choices=Difficulty.choices, default=Difficulty.INTERMEDIATE, verbose_name=_("difficulty")
    )
    due_date = models.DateTimeField(null=True, blank=True)
    estimated_minutes = models.IntegerField(default=30)
    ai_generated = models.BooleanField(default=False, verbose_name=_("ai generated"))
    student_response = models.TextField(null=True, blank=True)
    submission_timestamp = models.DateTimeField(null=True, blank=True)
    teacher_feedback = models.TextField(null=True, blank=True)
    grading_status = models.CharField(
        max_length=20, choices=GradingStatus.choices, default="not_submitted", verbose_name=_("grading status")
    )
    score = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("home task")
        verbose_name_plural = _("home tasks")
        db_table = "home_tasks"
        ordering = ["due_date"]

    def __str__(self) -> str:
        return f"{self.title} ({self.student})"


class FeedbackEntry(SyncVersionedModel):
    student = models.ForeignKey(Student, on_delete=models.CASCADE, related_name="feedback_entries")
    teacher = models.ForeignKey(Teacher, on_delete=models.SET_NULL, null=True, blank=True, related_name="feedback")
    group = models.ForeignKey(
        Group, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("group")
    )
    author = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    feedback_type = models.CharField(max_length=30, default="teacher_feedback", verbose_name=_("feedback type"))
    content = models.TextField()
    rating = models.IntegerField(null=True, blank=True)
    visible_to_family = models.BooleanField(default=True, verbose_name=_("visible to family"))
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("feedback entry")
        verbose_name_plural = _("feedback entries")
        db_table = "feedback_entries"

    def __str__(self) -> str:
        return f"{self.feedback_type.replace('_', ' ').capitalize()} for {self.student}"


class UserRelationship(TenantModel):
    """Family ties as the spec's FERPA function reads them: user_a is the relative of user_b."""

    class Type(models.TextChoices):
        PARENT = "parent"
        GUARDIAN = "guardian"
        FAMILY = "family"

    user_a = models.ForeignKey(User, on_delete=models.CASCADE, related_name="relationships_as_relative")
    user_b = models.ForeignKey(User, on_delete=models.CASCADE, related_name="relationships_as_student")
    relationship_type = models.CharField(max_length=16, choices=Type.choices, verbose_name=_("relationship type"))
    is_active = models.BooleanField(default=True, verbose_name=_("active"))

    class Meta:
        verbose_name = _("family relationship")
        verbose_name_plural = _("family relationships")
        db_table = "user_relationships"
        constraints = [
            models.UniqueConstraint(fields=["user_a", "user_b"], name="uniq_user_relationship"),
            models.CheckConstraint(
                condition=Q(relationship_type__in=["parent", "guardian", "family"]),
                name="user_relationships_type",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_a} is {self.get_relationship_type_display().lower()} of {self.user_b}"
