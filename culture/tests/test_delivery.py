"""The prayer-aware delivery policy."""

from datetime import datetime, timedelta

import pytest

from culture.delivery import delivery_decision

pytestmark = pytest.mark.django_db

# 2026-03-13 in Tashkent: dhuhr 12:38, its 20-minute window ends 12:58.
DHUHR = datetime.fromisoformat("2026-03-13T12:38:00+05:00")
WINDOW_END = datetime.fromisoformat("2026-03-13T12:58:00+05:00")


def _decide(org, priority, kind, at):
    return delivery_decision(organization=org, priority=priority, kind=kind, at=at)


def test_outside_prayer_everything_goes_now(schools, as_user):
    with as_user(schools.a.admin_user):
        for priority in ("low", "medium", "high", "critical"):
            assert _decide(schools.a.org, priority, "task_assignment", DHUHR - timedelta(hours=2)) == (True, None)


def test_critical_and_live_data_are_never_held(schools, as_user):
    with as_user(schools.a.admin_user):
        assert _decide(schools.a.org, "critical", "teacher_message", DHUHR + timedelta(minutes=5)) == (True, None)
        for kind in ("attendance_sync", "student_ranking_update", "ranking_update", "attendance"):
            assert _decide(schools.a.org, "low", kind, DHUHR + timedelta(minutes=5)) == (True, None)


def test_lower_priorities_in_the_window_are_held_until_it_ends(schools, as_user):
    with as_user(schools.a.admin_user):
        for priority in ("low", "medium", "high"):
            assert _decide(schools.a.org, priority, "task_assignment", DHUHR) == (False, WINDOW_END)
        # Approaching and post-prayer are not the window: deliver.
        assert _decide(schools.a.org, "low", "task_assignment", DHUHR - timedelta(minutes=5)) == (True, None)
        assert _decide(schools.a.org, "low", "task_assignment", WINDOW_END) == (True, None)


def test_held_items_release_after_the_window_in_original_order(schools, as_user):
    arrivals = [DHUHR + timedelta(minutes=m) for m in (0, 3, 7, 19)] + [WINDOW_END + timedelta(minutes=1)]
    queue = []
    with as_user(schools.a.admin_user):
        for seq, at in enumerate(arrivals):
            now, release_at = _decide(schools.a.org, "medium", "task_assignment", at)
            queue.append((release_at or at, seq, now))
    released = sorted(queue)
    assert [seq for _, seq, _ in released] == [0, 1, 2, 3, 4]
    assert all(release >= WINDOW_END for release, _, now in released if not now)
    assert [now for _, _, now in queue] == [False, False, False, False, True]


def test_unknown_priority_is_refused(schools, as_user):
    with as_user(schools.a.admin_user), pytest.raises(ValueError):
        _decide(schools.a.org, "urgent", "task_assignment", DHUHR)
