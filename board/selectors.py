"""What the staff board shows, read inside the viewer's tenant context (row-level security keeps
it to their school; teachers see their own groups only, as the API gives them)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count
from django.utils import timezone

from events.models import RealtimeEvent
from harry_realtime import kpi
from presence import marking
from presence.selectors import online_presence
from school import selectors as school_selectors
from school.models import Attendance, Group, Role, StudentGroupEnrollment, TeacherGroupAssignment, User

BOARD_ROLES = (Role.ADMIN, Role.TEACHER)
LAST_EVENTS = 12


def may_use_board(user: User) -> bool:
    return user.is_active and user.organization_id is not None and user.role in BOARD_ROLES


def board_groups(user: User) -> list[Group]:
    """Admins: every active group of the school; teachers: the groups they teach."""
    return sorted(school_selectors.groups_of_user(user), key=lambda g: g.name)


def _members(group_ids: list) -> dict[str, set[str]]:
    members: dict[str, set[str]] = defaultdict(set)
    enrolled = StudentGroupEnrollment.objects.filter(
        group_id__in=group_ids, status=StudentGroupEnrollment.Status.ACTIVE, student__user__isnull=False
    ).values_list("group_id", "student__user_id")
    teaching = TeacherGroupAssignment.objects.filter(
        group_id__in=group_ids, is_active=True, teacher__user__isnull=False
    ).values_list("group_id", "teacher__user_id")
    for group_id, user_id in [*enrolled, *teaching]:
        members[str(group_id)].add(str(user_id))
    return members


def _online_users() -> dict[str, dict[str, Any]]:
    online: dict[str, dict[str, Any]] = {}
    for row in online_presence():
        online.setdefault(
            str(row.user_id),
            {"userId": str(row.user_id), "name": row.user_name, "role": row.user_type, "activity": row.activity},
        )
    return online


def _attendance_today(group_ids: list, today) -> dict[str, Counter]:
    counts: dict[str, Counter] = defaultdict(Counter)
    rows = (
        Attendance.objects.filter(group_id__in=group_ids, attendance_date=today)
        .values("group_id", "status")
        .annotate(n=Count("pk"))
    )
    for row in rows:
        counts[str(row["group_id"])][row["status"]] = row["n"]
    return counts


def _markers(group_ids: list) -> dict[str, list[dict[str, Any]]]:
    active = {str(g): marking.active_markers(group_id=str(g)) for g in group_ids}
    names = dict(
        User.objects.filter(pk__in={u for users in active.values() for u in users}).values_list("pk", "full_name")
    )
    names = {str(k): v for k, v in names.items()}
    return {
        group: [{"userId": u, "name": names.get(u, u), "untilMs": until} for u, until in sorted(users.items())]
        for group, users in active.items()
    }


def _events() -> list[dict[str, Any]]:
    rows = RealtimeEvent.objects.filter(deleted_at__isnull=True).select_related("target_user", "target_group")
    return [
        {
            "seq": e.seq,
            "event": (e.event_metadata or {}).get("event") or e.event_type,
            "type": e.event_type,
            "priority": e.priority,
            "deliveryStatus": e.delivery_status,
            "target": str(e.target_user or e.target_group or e.broadcast_scope),
            "createdAt": e.created_at.isoformat(),
        }
        for e in rows.order_by("-seq")[:LAST_EVENTS]
    ]


def pipeline_health() -> dict[str, Any]:
    """The shared pipeline's state: listener, this school's backlog is part of the global one."""
    from harry_realtime.metrics import pipeline_figures

    figures = pipeline_figures()
    recent = kpi.recent_histogram("harry_delivery_latency_seconds", minutes=5)
    p99 = kpi.quantile(recent, 0.99) if recent else None
    return {
        **figures,
        "deliveriesLast5Min": int(recent.count) if recent else 0,
        "p99DeliveryMs": None if p99 is None else (None if p99 == float("inf") else round(p99 * 1000)),
        "p99OverMs": round(kpi.LATENCY_BUCKETS[-1] * 1000) if p99 == float("inf") else None,
    }


def board_snapshot(user: User) -> dict[str, Any]:
    org = user.organization
    today = timezone.localdate(timezone.now(), ZoneInfo(org.timezone))
    groups = board_groups(user)
    ids = [g.pk for g in groups]
    members, online, counts, markers = _members(ids), _online_users(), _attendance_today(ids, today), _markers(ids)
    enrolled = dict(
        StudentGroupEnrollment.objects.filter(group_id__in=ids, status=StudentGroupEnrollment.Status.ACTIVE)
        .values("group_id")
        .annotate(n=Count("pk"))
        .values_list("group_id", "n")
    )
    return {
        "organization": {"id": str(org.pk), "name": org.name},
        "viewer": {"id": str(user.pk), "name": user.full_name or user.username, "role": user.role},
        "date": today.isoformat(),
        "groups": [
            {
                "id": str(g.pk),
                "name": g.name,
                "subject": g.subject,
                "topic": f"attendance:org_{org.pk}:group_{g.pk}",
                "online": sorted(
                    (online[u] for u in members[str(g.pk)] if u in online), key=lambda p: (p["role"], p["name"])
                ),
                "marking": markers[str(g.pk)],
                "attendance": {"enrolled": enrolled.get(g.pk, 0), **counts[str(g.pk)]},
            }
            for g in groups
        ],
        "events": _events(),
        "pipeline": pipeline_health(),
    }
