"""The one prayer-aware delivery policy, used by pushes and non-critical broadcasts.

`delivery_decision(*, organization, priority, kind, at) -> (deliver_now: bool, release_at: datetime | None)`

- `priority` is the spec's "low" | "medium" | "high" | "critical";
- `kind` is what is being delivered: a realtime event type (e.g. "task_assignment"), a push
  notification type (e.g. "teacher_message") or a source table name;
- `at` is the moment of delivery (aware).

Rules, in order:
1. critical always goes now;
2. live data changes (attendance, rankings; see `LIVE_KINDS`) are never held: a stale attendance
   sheet or leaderboard is worse than a notification during prayer;
3. anything else addressed to the organization's users while its prayer window is open
   (status `in_prayer`) is held and released when the window ends: `(False, window_end)`.
   Everything held in one window gets the same `release_at`, so a releaser that sends due items
   ordered by (release_at, their own sequence) keeps the original order;
4. otherwise now: `(True, None)`.

Call inside the organization's tenant context (it reads the school's prayer settings).
"""

from __future__ import annotations

from datetime import datetime

from school.models import Organization

from .prayer import IN_PRAYER, PrayerStatus, prayer_status
from .selectors import location_of, method_for

CRITICAL = "critical"
PRIORITIES = ("low", "medium", "high", "critical")
LIVE_KINDS = frozenset(
    {
        "attendance_sync",
        "attendance",
        "student_ranking_update",
        "ranking_update",
        "student_rankings",
    }
)


def may_be_held(*, priority: str, kind: str) -> bool:
    """Rules 1 and 2: whether the prayer window matters at all (no astronomy needed to say no)."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}")
    return priority != CRITICAL and kind not in LIVE_KINDS


def organization_prayer_status(organization: Organization, at: datetime) -> PrayerStatus:
    return prayer_status(at, location_of(organization), method_for(organization))


def decide(*, priority: str, kind: str, status: PrayerStatus) -> tuple[bool, datetime | None]:
    """The policy for a prayer status already known (batch callers compute it once)."""
    if not may_be_held(priority=priority, kind=kind):
        return True, None
    if status.status == IN_PRAYER:
        return False, status.window_ends_at
    return True, None


def delivery_decision(
    *, organization: Organization, priority: str, kind: str, at: datetime
) -> tuple[bool, datetime | None]:
    if not may_be_held(priority=priority, kind=kind):
        return True, None
    return decide(priority=priority, kind=kind, status=organization_prayer_status(organization, at))


def held_until(*, organization: Organization, priority: str, kind: str, at: datetime) -> datetime | None:
    """The end of the prayer window that holds this delivery, or None when it goes now (sockets
    and pushes both ask this)."""
    deliver_now, release_at = delivery_decision(organization=organization, priority=priority, kind=kind, at=at)
    return None if deliver_now else release_at
