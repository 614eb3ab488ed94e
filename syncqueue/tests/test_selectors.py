"""Sync status and the delta pull, through HTTP."""

import pytest

from harry_realtime.tenancy import dangerously_platform_context
from school.models import Attendance, FeedbackEntry, HomeTask

from .conftest import op

CHANGES = "/api/realtime/sync/changes"
# The pull hands out only changes of finished transactions, so its tests commit their data
# (the owner alias flushes the tables between tests).
committed = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


def pull_all(client, **params):
    """Follow nextCursor until a page is not full; returns all changes and the final cursor."""
    changes, cursor = [], params.pop("cursor", "")
    while True:
        response = client.get(CHANGES, {"cursor": cursor, **params})
        assert response.status_code == 200, response.content
        body = response.json()
        changes += body["changes"]
        cursor = body["nextCursor"]
        if not body["hasMore"]:
            return changes, cursor


def ids(changes, table=None):
    return {c["id"] for c in changes if table is None or c["table"] == table}


@committed
def test_delta_pull_returns_changes_since_cursor_with_tombstones(schools, client_for, upload):
    a = schools.a
    teacher = client_for(a.teacher_user)
    everything, cursor = pull_all(teacher)
    assert {str(a.attendance.pk), str(a.task.pk), str(a.feedback.pk), str(a.group.pk)} <= ids(everything)
    again, cursor = pull_all(teacher, cursor=cursor)
    # Only changes of transactions still running when the last pass began may come again.
    assert len(again) < len(everything)

    body = upload(
        teacher,
        [
            op("attendance", "UPDATE", record_id=a.attendance.pk, version=1, data={"status": "late"}),
            op("feedback_entries", "DELETE", record_id=a.feedback.pk, version=1),
        ],
    )
    assert body["summary"] == {"completed": 2}
    with dangerously_platform_context():
        HomeTask.objects.filter(pk=a.task.pk).delete()
    changes, _ = pull_all(teacher, cursor=cursor)
    by_id = {c["id"]: c for c in changes}
    assert {str(a.attendance.pk), str(a.feedback.pk), str(a.task.pk)} <= set(by_id)
    assert str(a.achievement.pk) not in by_id
    assert by_id[str(a.attendance.pk)]["op"] == "upsert"
    assert by_id[str(a.attendance.pk)]["record"]["status"] == "late"
    assert by_id[str(a.attendance.pk)]["syncVersion"] == 2
    assert by_id[str(a.feedback.pk)]["op"] == "delete"  # soft delete
    assert by_id[str(a.task.pk)] == {"table": "home_tasks", "id": str(a.task.pk), "op": "delete", "syncVersion": 1}


@committed
def test_delta_pull_pages_with_the_cursor(schools, client_for):
    a = schools.a
    with dangerously_platform_context():
        made = [
            FeedbackEntry.objects.create(organization=a.org, student=a.student, teacher=a.teacher, content=f"n{i}")
            for i in range(7)
        ]
    client = client_for(a.admin_user)
    _, start = pull_all(client)
    with dangerously_platform_context():
        for entry in made:
            FeedbackEntry.objects.filter(pk=entry.pk).update(rating=5)
    first = client.get(CHANGES, {"cursor": start, "limit": 3, "tables": "feedback_entries"}).json()
    assert len(first["changes"]) == 3 and first["hasMore"] is True
    rest, _ = pull_all(client, cursor=first["nextCursor"], limit=3, tables="feedback_entries")
    assert ids(first["changes"]) | ids(rest) == {str(e.pk) for e in made}
    assert ids(first["changes"]).isdisjoint(ids(rest))


@committed
def test_delta_pull_shows_only_what_the_user_may_see(schools, client_for):
    a, b = schools.a, schools.b
    with dangerously_platform_context():
        hidden = FeedbackEntry.objects.create(
            organization=a.org, student=a.student, teacher=a.teacher, content="staff only", visible_to_family=False
        )
        other = Attendance.objects.create(
            organization=a.org,
            student=a.other_student,
            group=a.other_group,
            teacher=a.outsider,
            status="late",
            marked_by=a.outsider_user,
        )
    student, _ = pull_all(client_for(a.student_user))
    assert str(a.task.pk) in ids(student) and str(a.attendance.pk) in ids(student)
    assert str(other.pk) not in ids(student)
    assert str(a.other_student.pk) not in ids(student, "students")
    assert ids(student, "groups") == {str(a.group.pk)}
    own = next(c for c in student if c["id"] == str(a.student.pk))
    assert "medical_notes" in own["record"]

    parent, _ = pull_all(client_for(a.parent_user))
    assert str(a.feedback.pk) in ids(parent) and str(hidden.pk) not in ids(parent)

    teacher, _ = pull_all(client_for(a.teacher_user))
    assert str(other.pk) not in ids(teacher)
    child = next(c for c in teacher if c["id"] == str(a.student.pk))
    # The student's own teacher is an educator: the protected fields, as on the socket (events/ferpa.py).
    assert "medical_notes" in child["record"] and "family_details" in child["record"]

    admin, _ = pull_all(client_for(a.admin_user))
    assert str(other.pk) in ids(admin)
    # Nothing of school B, for anyone of school A.
    school_b = {str(b.attendance.pk), str(b.task.pk), str(b.student.pk), str(b.feedback.pk)}
    for seen in (student, parent, teacher, admin):
        assert school_b.isdisjoint(ids(seen))


def test_delta_pull_refuses_bad_parameters(schools, client_for):
    client = client_for(schools.a.teacher_user)
    for params, code in [
        ({"cursor": "garbage"}, "invalid_cursor"),
        ({"cursor": "-1.2"}, "invalid_cursor"),
        ({"tables": "users"}, "unknown_table"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "many"}, "invalid_limit"),
    ]:
        response = client.get(CHANGES, params)
        assert response.status_code == 400 and response.json()["error"]["code"] == code, params


def test_sync_status_counts_the_devices_operations(schools, client_for, upload):
    a, b = schools.a, schools.b
    teacher = client_for(a.teacher_user)
    with dangerously_platform_context():
        from school.models import Student

        Student.objects.filter(pk=a.student.pk).update(full_name="Server")
    upload(
        client_for(a.admin_user),
        [
            op(
                "students",
                "UPDATE",
                record_id=a.student.pk,
                version=1,
                data={"status": "inactive"},
                strategy="prompt_user",
            )
        ],
        device="admin-phone",
    )
    upload(teacher, [op("feedback_entries", data={"student_id": str(a.student.pk), "content": "ok"})], device="tab")

    body = teacher.get("/api/realtime/sync/status/tab").json()
    assert body["pendingOperations"] == 0 and body["conflictsDetected"] == 0
    assert body["lastSuccessfulSync"] is not None
    assert set(body["culturalBlockers"]) == {"prayerTimeConflict", "ramadanScheduleAdjustment"}
    # Nothing batches or compresses a device's queue here: only the measured estimate is reported.
    assert set(body["networkOptimization"]) == {"estimatedBandwidth"}

    admin = client_for(a.admin_user).get("/api/realtime/sync/status/admin-phone").json()
    assert admin["conflictsDetected"] == 1 and admin["lastSuccessfulSync"] is None
    # Another school's admin and a teacher of the same school do not see this device's rows.
    assert client_for(b.admin_user).get("/api/realtime/sync/status/admin-phone").json()["conflictsDetected"] == 0
    assert teacher.get("/api/realtime/sync/status/admin-phone").json()["conflictsDetected"] == 0


@committed
def test_a_change_that_commits_after_a_pull_is_not_skipped(schools, client_for):
    """A transaction that wrote first but commits last must still reach the device."""
    import threading

    from django.db import connection

    a = schools.a
    client = client_for(a.admin_user)
    _, cursor = pull_all(client)
    written, release = threading.Event(), threading.Event()
    slow: dict = {}

    def slow_writer():
        try:
            with dangerously_platform_context():
                slow["entry"] = FeedbackEntry.objects.create(
                    organization=a.org, student=a.student, teacher=a.teacher, content="slow"
                )
                written.set()
                release.wait(20)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert written.wait(10)
    with dangerously_platform_context():
        fast = FeedbackEntry.objects.create(organization=a.org, student=a.student, teacher=a.teacher, content="fast")
    seen, cursor = pull_all(client, cursor=cursor)
    assert str(fast.pk) in ids(seen) and str(slow["entry"].pk) not in ids(seen)
    release.set()
    thread.join(10)
    seen, _ = pull_all(client, cursor=cursor)
    assert str(slow["entry"].pk) in ids(seen)
