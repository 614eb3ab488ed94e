"""The upload endpoint through HTTP: outcomes, validation, priorities and conflicts."""

from datetime import timedelta

from django.utils import timezone

from harry_realtime.tenancy import dangerously_platform_context
from school.models import Attendance, FeedbackEntry, HomeTask, Organization, StudentRanking
from syncqueue.models import OfflineSyncOperation

from .conftest import op


def mark(school, status="absent", **extra):
    data = {"student_id": str(school.student.pk), "group_id": str(school.group.pk), "status": status}
    return op("attendance", data={**data, **extra.pop("data", {})}, **extra)


def platform(fn):
    with dangerously_platform_context():
        return fn()


def test_mixed_batch_applies_what_is_valid_and_reports_each_failure(schools, client_for, upload):
    a, b = schools.a, schools.b
    ops = [
        mark(a, attendance_date=None, data={"attendance_date": "2030-01-02"}),
        op("no_such_table", data={"x": 1}),
        op("attendance", "UPDATE", record_id="not-a-uuid", version=1, data={"status": "late"}),
        op("attendance", data=None) | {"data": "nope"},
        {"operation": "INSERT", "tableName": "attendance", "data": {}, "timestamp": timezone.now().isoformat()},
        op("attendance", "UPDATE", record_id=b.attendance.pk, version=1, data={"status": "late"}),
        op("attendance", data={"student_id": str(a.student.pk), "group_id": str(a.group.pk), "status": "asleep"}),
        op("attendance", data={"student_id": str(a.student.pk)}),
    ]
    body = upload(client_for(a.teacher_user), ops)
    codes = [r.get("error", {}).get("code") for r in body["results"]]
    assert [r["status"] for r in body["results"]] == ["completed"] + ["failed"] * 7
    assert codes[1:] == [
        "unknown_table",
        "invalid_record_id",
        "missing_field",
        "missing_field",
        "not_found",
        "invalid_value",
        "missing_field",
    ]
    assert body["summary"] == {"completed": 1, "failed": 7}
    assert platform(lambda: Attendance.objects.filter(attendance_date="2030-01-02").count()) == 1
    # School B's record is untouched; failed operations with an id are stored with their outcome.
    assert platform(lambda: Attendance.objects.get(pk=b.attendance.pk).status) == "present"
    stored = platform(lambda: dict(OfflineSyncOperation.objects.values_list("operation_id", "sync_status")))
    assert stored[ops[0]["id"]] == "completed"
    assert stored[ops[5]["id"]] == "failed"
    assert ops[2]["id"] not in stored  # malformed: refused before anything is written


def test_same_batch_posted_twice_applies_once(schools, client_for, upload):
    a = schools.a
    ops = [
        mark(a, data={"attendance_date": "2030-02-01"}),
        op("feedback_entries", data={"student_id": str(a.student.pk), "content": "Well done"}),
    ]
    client = client_for(a.teacher_user)
    first = upload(client, ops)
    second = upload(client, ops)
    assert [r["status"] for r in first["results"]] == ["completed", "completed"]
    assert [r["status"] for r in second["results"]] == ["duplicate", "duplicate"]
    assert second["results"][0]["original"] == first["results"][0]
    assert platform(lambda: FeedbackEntry.objects.filter(content="Well done").count()) == 1
    assert platform(lambda: Attendance.objects.filter(attendance_date="2030-02-01").count()) == 1


def test_duplicate_inside_one_batch_is_applied_once(schools, client_for, upload):
    a = schools.a
    feedback = op("feedback_entries", data={"student_id": str(a.student.pk), "content": "Twice?"})
    body = upload(client_for(a.teacher_user), [feedback, feedback])
    assert [r["status"] for r in body["results"]] == ["completed", "duplicate"]
    assert platform(lambda: FeedbackEntry.objects.filter(content="Twice?").count()) == 1


def test_batch_over_500_is_refused_with_413(schools, client_for, upload):
    ops = [mark(schools.a) for _ in range(501)]
    body = upload(client_for(schools.a.teacher_user), ops, status=413)
    assert body["error"]["code"] == "batch_too_large"
    assert platform(lambda: OfflineSyncOperation.objects.count()) == 0


def test_bad_envelope_is_a_400(schools, client_for, upload):
    body = upload(client_for(schools.a.teacher_user), "not a list", status=400)
    assert body["error"]["code"] == "validation_error"
    assert upload(client_for(schools.a.teacher_user), [], status=400)["error"]["code"] == "validation_error"


def test_unauthenticated_upload_is_refused(api):
    response = api.post("/api/realtime/sync/queue", {"deviceId": "d", "operations": []}, format="json")
    assert response.status_code == 401


def test_students_may_not_write_rankings_or_attendance(schools, client_for, upload):
    a = schools.a
    body = upload(
        client_for(a.student_user),
        [
            op("student_rankings", "UPDATE", record_id=a.ranking.pk, version=1, data={"total_points": 9999}),
            mark(a, status="present"),
            op("feedback_entries", data={"student_id": str(a.student.pk), "content": "I am great"}),
        ],
    )
    assert [r["error"]["code"] for r in body["results"]] == [
        "server_only_table",
        "permission_denied",
        "permission_denied",
    ]
    assert platform(lambda: StudentRanking.objects.get(pk=a.ranking.pk).total_points) == 120


def test_rankings_are_server_only_even_for_admins(schools, client_for, upload):
    a = schools.a
    body = upload(
        client_for(a.admin_user),
        [op("student_rankings", "UPDATE", record_id=a.ranking.pk, version=1, data={"total_points": 1})],
    )
    assert body["results"][0]["error"]["code"] == "server_only_table"


def test_teacher_may_not_mark_a_group_they_do_not_teach(schools, client_for, upload):
    a = schools.a
    other = {"student_id": str(a.other_student.pk), "group_id": str(a.other_group.pk), "status": "late"}
    body = upload(client_for(a.outsider_user), [mark(a), op("attendance", data=other)])
    assert [r["error"]["code"] for r in body["results"]] == ["permission_denied", "permission_denied"]


def test_student_not_in_group_is_refused(schools, client_for, upload):
    a = schools.a
    data = {"student_id": str(a.other_student.pk), "group_id": str(a.group.pk), "status": "late"}
    body = upload(client_for(a.admin_user), [op("attendance", data={**data, "teacher_id": str(a.teacher.pk)})])
    assert body["results"][0]["error"]["code"] == "student_not_in_group"


def test_device_of_school_a_naming_school_b_records_gets_not_found(schools, client_for, upload):
    a, b = schools.a, schools.b
    body = upload(
        client_for(a.admin_user),
        [
            op("home_tasks", "UPDATE", record_id=b.task.pk, version=1, data={"title": "x"}),
            op("feedback_entries", data={"student_id": str(b.student.pk), "content": "x"}),
            op(
                "attendance",
                data={
                    "student_id": str(a.student.pk),
                    "group_id": str(b.group.pk),
                    "status": "late",
                    "teacher_id": str(a.teacher.pk),
                },
            ),
        ],
    )
    assert [r["error"]["code"] for r in body["results"]] == ["not_found"] * 3
    assert platform(lambda: HomeTask.objects.get(pk=b.task.pk).title) == "Essay"


def test_attendance_older_than_24_hours_is_refused(schools, client_for, upload):
    a = schools.a
    old = (timezone.now() - timedelta(hours=25)).isoformat()
    fresh = (timezone.now() - timedelta(hours=23)).isoformat()
    body = upload(
        client_for(a.teacher_user),
        [
            mark(a, timestamp=old, data={"attendance_date": "2030-03-01"}),
            mark(a, timestamp=fresh, data={"attendance_date": "2030-03-02"}),
        ],
    )
    assert [r["status"] for r in body["results"]] == ["failed", "completed"]
    assert body["results"][0]["error"]["code"] == "offline_timeout"


def test_offline_attendance_is_marked_as_such(schools, client_for, upload):
    a = schools.a
    when = timezone.now() - timedelta(hours=2)
    body = upload(
        client_for(a.teacher_user), [mark(a, timestamp=when.isoformat(), data={"attendance_date": "2030-04-01"})]
    )
    row = platform(lambda: Attendance.objects.get(pk=body["results"][0]["recordId"]))
    assert row.marked_offline is True
    assert abs((row.offline_timestamp - when).total_seconds()) < 1
    assert row.sync_priority == 10
    assert row.marked_by_id == a.teacher_user.pk


def test_cultural_compliance_flag_is_enforced_when_the_school_enables_it(schools, client_for, upload):
    a = schools.a
    feedback = {"student_id": str(a.student.pk), "content": "Respectful note"}
    client = client_for(a.teacher_user)
    assert upload(client, [op("feedback_entries", data=feedback)])["results"][0]["status"] == "completed"

    def enable():
        Organization.objects.filter(pk=a.org.pk).update(settings={"cultural_compliance_required": True})

    platform(enable)
    body = upload(
        client,
        [
            op("feedback_entries", data=feedback),
            op("feedback_entries", data=feedback, culturalContext={"islamic_values_compliant": True}),
            op("home_tasks", "UPDATE", record_id=a.task.pk, version=1, data={"title": "New"}),
        ],
    )
    assert [r["status"] for r in body["results"]] == ["failed", "completed", "failed"]
    assert body["results"][0]["error"]["code"] == "cultural_compliance_required"


def test_operations_apply_in_priority_order(schools, client_for, upload):
    a = schools.a
    feedback = op("feedback_entries", data={"student_id": str(a.student.pk), "content": "later"}, priority=10)
    task = op("home_tasks", "UPDATE", record_id=a.task.pk, version=1, data={"title": "Essay v2"})
    attendance = mark(a, data={"attendance_date": "2030-05-01"}, priority=1)
    prayer = op(
        "feedback_entries",
        data={"student_id": str(a.student.pk), "content": "prayer"},
        culturalContext={"prayerTimeContext": "asr"},
    )
    body = upload(client_for(a.teacher_user), [feedback, task, attendance, prayer], batteryMode="battery_saver")
    # attendance 10+3-1 -> 10, task 7+3-1 = 9, prayer feedback 5+3+3-1 -> 10, feedback 5+3-1 = 7.
    # Equal effective priority: the device's own priority orders them.
    assert body["appliedOrder"] == [prayer["id"], attendance["id"], task["id"], feedback["id"]]
    assert [r["priority"] for r in body["results"]] == [7, 9, 10, 10]


def test_field_not_writable_by_role_is_refused(schools, client_for, upload):
    a = schools.a
    body = upload(
        client_for(a.student_user),
        [op("home_tasks", "UPDATE", record_id=a.task.pk, version=1, data={"teacher_feedback": "A+ from me"})],
    )
    assert body["results"][0]["error"] == {
        "code": "field_not_allowed",
        "message": "These fields may not be written by this user.",
        "details": ["teacher_feedback"],
    }


def test_student_submits_own_task_but_not_another_students(schools, client_for, upload):
    a = schools.a
    with dangerously_platform_context():
        others_task = HomeTask.objects.create(organization=a.org, student=a.other_student, title="Not yours")
    body = upload(
        client_for(a.student_user),
        [
            op("home_tasks", "UPDATE", record_id=a.task.pk, version=1, data={"student_response": "My essay"}),
            op("home_tasks", "UPDATE", record_id=others_task.pk, version=1, data={"student_response": "Mine"}),
        ],
    )
    assert body["results"][0]["status"] == "completed"
    assert body["results"][0]["record"]["grading_status"] == "submitted"
    assert body["results"][1]["error"]["code"] == "permission_denied"


def test_update_without_sync_version_is_refused(schools, client_for, upload):
    a = schools.a
    body = upload(
        client_for(a.teacher_user), [op("attendance", "UPDATE", record_id=a.attendance.pk, data={"status": "late"})]
    )
    assert body["results"][0]["error"]["code"] == "sync_version_required"


def test_delete_is_a_soft_delete(schools, client_for, upload):
    a = schools.a
    body = upload(client_for(a.teacher_user), [op("feedback_entries", "DELETE", record_id=a.feedback.pk, version=1)])
    assert body["results"][0]["status"] == "completed"
    row = platform(lambda: FeedbackEntry.objects.get(pk=a.feedback.pk))
    assert row.deleted_at is not None and row.sync_version == 2
    again = upload(
        client_for(a.teacher_user),
        [op("feedback_entries", "UPDATE", record_id=a.feedback.pk, version=2, data={"content": "x"})],
    )
    assert again["results"][0]["error"]["code"] == "not_found"
