"""Reads of who is online. Callers run them inside a tenant context: row-level security keeps
presence inside the organization."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from harry_realtime.errors import Forbidden, NotFound
from school.models import Group, Role, StudentGroupEnrollment, User
from school.selectors import student_for_user, user_may_watch_group

from .models import RealtimePresence


def online_presence() -> QuerySet[RealtimePresence]:
    """Devices present now: not offline and not past their expiry."""
    return (
        RealtimePresence.objects.exclude(status="offline")
        .filter(expires_at__gt=timezone.now())
        .select_related("current_group")
        .order_by("user_name", "device_id")
    )


def online_in_group(group_id) -> QuerySet[RealtimePresence]:
    return online_presence().filter(current_group_id=group_id)


def may_see_group_presence(user: User, group_id) -> bool:
    """The group's teachers, admins, and students enrolled in it."""
    if user_may_watch_group(user, group_id):
        return True
    student = student_for_user(user) if user.role == Role.STUDENT else None
    return bool(
        student
        and StudentGroupEnrollment.objects.filter(
            student=student, group_id=group_id, status=StudentGroupEnrollment.Status.ACTIVE
        ).exists()
    )


def may_see_organization_presence(user: User) -> bool:
    """The whole school's presence is a staff view."""
    return user.role in (Role.TEACHER, Role.ADMIN)


def group_or_not_found(group_id) -> Group:
    group = Group.objects.filter(pk=group_id).first()
    if group is None:
        raise NotFound("group_not_found", "No such group in this organization.")
    return group


def group_presence(*, user: User, group_id) -> list[RealtimePresence]:
    """Who is online in a group, for its teachers, admins and enrolled students."""
    group = group_or_not_found(group_id)
    if not may_see_group_presence(user, group.pk):
        raise Forbidden("forbidden", "You may not see this group's presence.")
    return list(online_in_group(group.pk))


def organization_presence(*, user: User) -> list[RealtimePresence]:
    """Who is online in the whole school: a staff view."""
    if not may_see_organization_presence(user):
        raise Forbidden("forbidden", "The organization's presence is a staff view.")
    return list(online_presence())
