"""Change capture: the triggers store an event for every write, whoever writes, and the SQL
rules agree with the Python ones."""

from datetime import date, timedelta

import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from events import domain
from events.models import RealtimeEvent
from harry_realtime.tenancy import dangerously_platform_context
from school.models import Attendance, Group, StudentRanking, TeacherGroupAssignment

pytestmark = pytest.mark.django_db


def events_for(source_table: str, record_id) -> list[RealtimeEvent]:
    with dangerously_platform_context():
        return list(RealtimeEvent.objects.filter(source_table=source_table, source_record_id=record_id).order_by("seq"))


def test_every_fixture_write_stored_an_event(schools):
    a = schools.a
    for table, row in [
        ("attendance", a.attendance),
        ("student_rankings", a.ranking),
        ("student_achievements", a.award),
        ("home_tasks", a.task),
        ("feedback_entries", a.feedback),
        ("students", a.student),
        ("groups", a.group),
    ]:
        stored = events_for(table, row.pk)
        assert len(stored) == 1, table
        assert stored[0].organization_id == a.org.pk
        assert stored[0].event_metadata["change"]["type"] == "INSERT"
        assert stored[0].event_metadata["change"]["record"]["id"] == str(row.pk)


def test_attendance_event_targets_group_and_its_teachers(schools, as_user):
    a = schools.a
    with as_user(a.teacher_user):
        Attendance.objects.filter(pk=a.attendance.pk).update(status="late")
    event = events_for("attendance", a.attendance.pk)[-1]
    assert event.event_type == "attendance_sync"
    assert event.broadcast_scope == "group"
    assert event.target_group_id == a.group.pk
    assert event.target_user_id is None  # the spec put a student id in a users FK here
    assert event.event_metadata["topics"] == [
        f"attendance:org_{a.org.pk}:group_{a.group.pk}",
        f"groups:org_{a.org.pk}:teacher_{a.teacher.pk}",
    ]
    change = event.event_metadata["change"]
    assert (change["type"], change["record"]["status"], change["old_record"]["status"]) == ("UPDATE", "late", "present")
    assert change["commit_timestamp"].endswith("Z")
    audience = event.event_metadata["audience"]
    assert audience["student_user_id"] == str(a.student_user.pk)
    assert audience["family_user_ids"] == [str(a.parent_user.pk)]
    assert audience["educator_user_ids"] == [str(a.teacher_user.pk)]


def test_attendance_in_group_without_teachers_still_commits(schools, as_user):
    """The spec's FOR loop over a NULL array bound raised and rolled the attendance write back."""
    a = schools.a
    with as_user(a.admin_user):
        Attendance.objects.create(
            organization=a.org,
            student=a.other_student,
            group=a.other_group,
            teacher=a.outsider,
            status="absent",
            marked_by=a.admin_user,
        )
    with dangerously_platform_context():
        event = RealtimeEvent.objects.filter(source_table="attendance", target_group=a.other_group).get()
    assert event.event_metadata["topics"] == [f"attendance:org_{a.org.pk}:group_{a.other_group.pk}"]


@pytest.mark.parametrize(
    ("change", "celebrate", "priority", "name"),
    [
        ({"current_rank": 3}, True, "high", "ranking_celebration"),
        ({"current_level": 2}, True, "high", "level_up_achievement"),
        ({"total_points": 220}, True, "high", "ranking_celebration"),  # +100 points, rank unchanged
        ({"total_points": 150}, False, "medium", "ranking_update"),
        ({"current_rank": 9}, False, "medium", "ranking_update"),
    ],
)
def test_ranking_celebration_rule(schools, as_user, change, celebrate, priority, name):
    a = schools.a
    with as_user(a.teacher_user):
        StudentRanking.objects.filter(pk=a.ranking.pk).update(**change)
    event = events_for("student_rankings", a.ranking.pk)[-1]
    assert event.event_payload["celebration_triggered"] is celebrate
    assert event.priority == priority
    assert event.target_user_id == a.student_user.pk
    assert event.event_payload["age_group"] == domain.age_group(a.student.date_of_birth, date.today())
    assert [b[1] for b in domain.broadcasts(event)] == [name]


def test_ranking_update_without_rank_level_or_points_is_not_a_domain_event(schools, as_user):
    with as_user(schools.a.teacher_user):
        StudentRanking.objects.filter(pk=schools.a.ranking.pk).update(coins=5)
    event = events_for("student_rankings", schools.a.ranking.pk)[-1]
    assert event.event_metadata["change"]["record"]["coins"] == 5
    assert domain.broadcasts(event) == []


def test_raw_sql_write_and_delete_are_captured(schools):
    a = schools.a
    with dangerously_platform_context(), connection.cursor() as cursor:
        cursor.execute("UPDATE groups SET name = 'Renamed' WHERE id = %s", [a.group.pk])
        cursor.execute("DELETE FROM feedback_entries WHERE id = %s", [a.feedback.pk])
    renamed = events_for("groups", a.group.pk)[-1]
    assert renamed.event_metadata["change"]["record"]["name"] == "Renamed"
    assert renamed.event_metadata["topics"] == [f"groups:org_{a.org.pk}:teacher_{a.teacher.pk}"]
    deleted = events_for("feedback_entries", a.feedback.pk)[-1]
    assert deleted.event_metadata["change"]["type"] == "DELETE"
    assert deleted.event_metadata["change"]["record"] == {}
    assert deleted.event_metadata["change"]["old_record"]["id"] == str(a.feedback.pk)


def test_write_in_another_schools_context_is_refused_and_stores_nothing(schools, as_user):
    b = schools.b
    before = len(events_for("groups", b.group.pk))
    with as_user(schools.a.admin_user):
        assert Group.objects.filter(pk=b.group.pk).update(name="hijack") == 0
    assert len(events_for("groups", b.group.pk)) == before


def test_enrollment_and_assignment_changes_reach_group_teachers(schools, as_user):
    a = schools.a
    with as_user(a.admin_user):
        TeacherGroupAssignment.objects.create(organization=a.org, teacher=a.outsider, group=a.other_group)
        enrollment = a.other_student.enrollments.get()
        enrollment.status = "withdrawn"
        enrollment.save()
    event = events_for("student_group_enrollments", enrollment.pk)[-1]
    assert event.event_metadata["topics"] == [f"groups:org_{a.org.pk}:teacher_{a.outsider.pk}"]
    assert domain.broadcasts(event)[0][1] == "enrollment_change"


@settings(max_examples=60, deadline=None)
@given(days=st.integers(min_value=8 * 365, max_value=20 * 365))
def test_sql_age_rules_match_python(days):
    today = date(2026, 3, 1)
    dob = today - timedelta(days=days)
    with connection.cursor() as cursor:
        cursor.execute("SELECT realtime_age_group(%s, %s), realtime_celebration_style(%s, %s)", [dob, today] * 2)
        group, style = cursor.fetchone()
    assert group == domain.age_group(dob, today)
    assert style == domain.celebration_style(dob, today)
