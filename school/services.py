"""Writes for the school tables that are not the apps' own features: a user's preferences, demo data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.contrib.auth.models import Group as AuthGroup
from django.contrib.auth.models import Permission
from django.db import transaction
from django.utils import timezone

from harry_realtime.tenancy import dangerously_platform_context

from .models import (
    Achievement,
    Attendance,
    Group,
    HomeTask,
    Organization,
    Role,
    Student,
    StudentAchievement,
    StudentGroupEnrollment,
    StudentRanking,
    Teacher,
    TeacherGroupAssignment,
    User,
    UserRelationship,
)
from .staff import school_admin_group_sync

DEMO_PASSWORD = "harry-demo"


@transaction.atomic
def user_family_engagement_set(*, user: User, enabled: bool) -> None:
    """Whether this relative hears about their children (events/family.py); the apps send it as
    `culturalPreferences.familyEngagement` when they connect. Caller's tenant context."""
    if user.family_engagement != enabled:
        user.family_engagement = enabled
        user.save(update_fields=["family_engagement", "updated_at"])


@dataclass(frozen=True)
class DemoSchool:
    name: str
    slug: str
    domain: str
    latitude: str
    longitude: str
    timezone: str
    language: str
    groups: tuple[str, ...]


DEMO_SCHOOLS = (
    DemoSchool(
        "Harry School Tashkent",
        "harry-tashkent",
        "harry.uz",
        "41.299500",
        "69.240100",
        "Asia/Tashkent",
        "uz",
        ("English A1 Morning", "IELTS Evening", "Math Olympiad"),
    ),
    DemoSchool(
        "Samarkand Academy",
        "samarkand-academy",
        "samarkand.uz",
        "39.654200",
        "66.959700",
        "Asia/Samarkand",
        "uz",
        ("Registan English", "Physics Club"),
    ),
)
PLATFORM_LOGIN = "platform@harry.uz"


def _user(org: Organization | None, username: str, role: str, full_name: str, **extra) -> User:
    user = User.objects.filter(username=username).first()
    if user is None:
        user = User.objects.create_user(
            username, DEMO_PASSWORD, organization=org, role=role, full_name=full_name, language="uz", **extra
        )
    return user


def _birthday(age: int, today: date) -> date:
    return date(today.year - age, 1 + (age % 12), 10)


def _seed_school(spec: DemoSchool, today: date) -> Organization:
    org, _ = Organization.objects.get_or_create(
        slug=spec.slug,
        defaults=dict(
            name=spec.name,
            country="UZ",
            latitude=Decimal(spec.latitude),
            longitude=Decimal(spec.longitude),
            timezone=spec.timezone,
            default_language=spec.language,
        ),
    )
    admin = _user(org, f"admin@{spec.domain}", Role.ADMIN, f"{spec.name} Admin", is_staff=True)
    school_admin_grant(user=admin)
    groups = [
        Group.objects.get_or_create(organization=org, name=name, defaults={"subject": name})[0] for name in spec.groups
    ]
    teachers = []
    for index, group in enumerate(groups):
        login = f"teacher@{spec.domain}" if index == 0 else f"teacher{index + 1}@{spec.domain}"
        user = _user(org, login, Role.TEACHER, f"Teacher {index + 1} ({spec.name})")
        teacher, _ = Teacher.objects.get_or_create(organization=org, user=user, defaults={"full_name": user.full_name})
        TeacherGroupAssignment.objects.get_or_create(organization=org, teacher=teacher, group=group)
        teachers.append(teacher)
    achievement, _ = Achievement.objects.get_or_create(
        organization=org,
        name="Perfect Week",
        defaults={"points_reward": 50, "coins_reward": 10, "category": "attendance"},
    )
    for age in range(10, 19):
        login = f"student@{spec.domain}" if age == 12 else f"student{age}@{spec.domain}"
        user = _user(org, login, Role.STUDENT, f"Student aged {age} ({spec.name})")
        student, _ = Student.objects.get_or_create(
            organization=org, user=user, defaults={"full_name": user.full_name, "date_of_birth": _birthday(age, today)}
        )
        group_index = 0 if age <= 13 else (age % len(groups))
        group, teacher = groups[group_index], teachers[group_index]
        StudentGroupEnrollment.objects.get_or_create(organization=org, student=student, group=group)
        StudentRanking.objects.get_or_create(
            organization=org, student=student, defaults={"current_rank": 19 - age, "total_points": 100 + 37 * age}
        )
        HomeTask.objects.get_or_create(
            organization=org,
            student=student,
            title="Weekly essay",
            defaults={"group": group, "teacher": teacher, "due_date": timezone.now() + timedelta(days=3)},
        )
        Attendance.objects.get_or_create(
            organization=org,
            student=student,
            group=group,
            attendance_date=today,
            defaults={"teacher": teacher, "status": "present", "marked_by": teacher.user},
        )
        if age % 3 == 0:
            StudentAchievement.objects.get_or_create(organization=org, student=student, achievement=achievement)
        if login == f"student@{spec.domain}":
            parent = _user(org, f"parent@{spec.domain}", Role.PARENT, f"Parent of {user.full_name}")
            UserRelationship.objects.get_or_create(
                organization=org, user_a=parent, user_b=user, defaults={"relationship_type": "parent"}
            )
    return org


@transaction.atomic
def school_admin_grant(*, user: User) -> None:
    """Make a school's user an admin in the Django admin: staff in the school-admin group (never
    a superuser, which is the platform's alone). Re-applies the group's permissions."""
    group = school_admin_group_sync(group_model=AuthGroup, permission_model=Permission)
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.add(group)


@transaction.atomic
def demo_data_seed(*, today: date | None = None) -> list[Organization]:
    """Create (or leave as they are) the two demo schools, their people and a platform admin."""
    today = today or timezone.localdate()
    with dangerously_platform_context():
        organizations = [_seed_school(spec, today) for spec in DEMO_SCHOOLS]
        _user(None, PLATFORM_LOGIN, Role.ADMIN, "Platform Admin", is_staff=True, is_superuser=True)
    return organizations
