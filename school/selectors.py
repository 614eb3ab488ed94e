"""Reads about people and their relations. Callers run them inside a tenant context."""

from __future__ import annotations

import uuid
from datetime import date

from harry_realtime.tenancy import dangerously_platform_context

from .models import (
    Group,
    Role,
    Student,
    StudentGroupEnrollment,
    Teacher,
    TeacherGroupAssignment,
    User,
    UserRelationship,
)

FAMILY_TYPES = ("parent", "guardian", "family")


def student_for_user(user: User) -> Student | None:
    return Student.objects.filter(user_id=user.pk).first()


def teacher_for_user(user: User) -> Teacher | None:
    return Teacher.objects.filter(user_id=user.pk, is_active=True, deleted_at__isnull=True).first()


def active_group_ids_of_teacher(teacher_id: uuid.UUID | str) -> set[str]:
    rows = TeacherGroupAssignment.objects.filter(
        teacher_id=teacher_id, is_active=True, deleted_at__isnull=True
    ).values_list("group_id", flat=True)
    return {str(g) for g in rows}


def active_group_ids_of_student(student_id: uuid.UUID | str) -> set[str]:
    rows = StudentGroupEnrollment.objects.filter(
        student_id=student_id, status=StudentGroupEnrollment.Status.ACTIVE
    ).values_list("group_id", flat=True)
    return {str(g) for g in rows}


def children_of(user: User) -> list[Student]:
    """Students whose family member (parent, guardian, family) this user is."""
    child_user_ids = UserRelationship.objects.filter(
        user_a_id=user.pk, relationship_type__in=FAMILY_TYPES, is_active=True
    ).values_list("user_b_id", flat=True)
    return list(Student.objects.filter(user_id__in=list(child_user_ids)))


def family_user_ids_of_student(student: Student) -> set[str]:
    if not student.user_id:
        return set()
    rows = UserRelationship.objects.filter(
        user_b_id=student.user_id, relationship_type__in=FAMILY_TYPES, is_active=True
    ).values_list("user_a_id", flat=True)
    return {str(u) for u in rows}


def teacher_ids_of_group(group_id: uuid.UUID | str) -> set[str]:
    rows = TeacherGroupAssignment.objects.filter(
        group_id=group_id, is_active=True, deleted_at__isnull=True
    ).values_list("teacher_id", flat=True)
    return {str(t) for t in rows}


def user_may_watch_student(user: User, student_id: uuid.UUID | str) -> bool:
    """The student themself, their family, teachers of their groups, admins of the school."""
    student = Student.objects.filter(pk=student_id).first()
    if student is None:
        return False
    if user.role == Role.ADMIN:
        return True
    if student.user_id == user.pk:
        return True
    if str(user.pk) in family_user_ids_of_student(student):
        return True
    teacher = teacher_for_user(user) if user.role == Role.TEACHER else None
    if teacher is None:
        return False
    return bool(active_group_ids_of_teacher(teacher.pk) & active_group_ids_of_student(student.pk))


def user_may_watch_group(user: User, group_id: uuid.UUID | str) -> bool:
    """Teachers assigned to the group and admins of the school."""
    if not Group.objects.filter(pk=group_id).exists():
        return False
    if user.role == Role.ADMIN:
        return True
    teacher = teacher_for_user(user) if user.role == Role.TEACHER else None
    return teacher is not None and str(group_id) in active_group_ids_of_teacher(teacher.pk)


def user_may_watch_teacher(user: User, teacher_id: uuid.UUID | str) -> bool:
    """That teacher and admins of the school."""
    teacher = Teacher.objects.filter(pk=teacher_id).first()
    if teacher is None:
        return False
    return user.role == Role.ADMIN or teacher.user_id == user.pk


def groups_of_user(user: User) -> list[Group]:
    if user.role == Role.TEACHER:
        teacher = teacher_for_user(user)
        ids = active_group_ids_of_teacher(teacher.pk) if teacher else set()
    elif user.role == Role.STUDENT:
        student = student_for_user(user)
        ids = active_group_ids_of_student(student.pk) if student else set()
    elif user.role == Role.ADMIN:
        return list(Group.objects.filter(is_active=True))
    else:
        ids = set()
    return list(Group.objects.filter(pk__in=ids))


def age_on(date_of_birth: date, today: date) -> int:
    years = today.year - date_of_birth.year
    if (today.month, today.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years


def dangerously_users_still_signed_in(identities: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """Of (user id, organization id, role) triples, those whose user is still active in that school
    with that role. Reads across schools as the platform role: the gateway's revocation poll only."""
    if not identities:
        return set()
    with dangerously_platform_context():
        rows = User.objects.filter(pk__in={user_id for user_id, _org, _role in identities}, is_active=True)
        current = {(str(pk), str(org), role) for pk, org, role in rows.values_list("pk", "organization_id", "role")}
    return identities & current
