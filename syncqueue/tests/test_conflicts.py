"""Conflicts of each kind, through the upload and the conflict endpoints."""

from harry_realtime.tenancy import dangerously_platform_context
from school.models import Attendance, FeedbackEntry, HomeTask, Student
from syncqueue.models import OfflineSyncOperation

from .conftest import op


def platform(fn):
    with dangerously_platform_context():
        return fn()


def bump(model, pk, **values):
    """Someone else edits the record on the server, so the device's version goes stale."""
    platform(lambda: model.objects.filter(pk=pk).update(**values))


def test_attendance_conflict_teacher_authority_applies_the_teachers_mark(schools, client_for, upload):
    a = schools.a
    bump(Attendance, a.attendance.pk, notes="edited on the web")
    body = upload(
        client_for(a.teacher_user),
        [op("attendance", "UPDATE", record_id=a.attendance.pk, version=1, data={"status": "sick"})],
    )
    result = body["results"][0]
    assert result["status"] == "conflict"
    assert result["conflict"]["resolved"] is True
    assert result["conflict"]["rule"] == "teacher_authority"
    assert result["conflict"]["winner"] == "client"
    assert result["syncVersion"] == 3
    row = platform(lambda: Attendance.objects.get(pk=a.attendance.pk))
    assert (row.status, row.notes, row.sync_version) == ("sick", "edited on the web", 3)
    stored = platform(lambda: OfflineSyncOperation.objects.get(operation_id=result["id"]))
    assert stored.conflict_detected and stored.sync_status == "completed"
    assert stored.conflict_metadata["rule"] == "teacher_authority"
    assert stored.conflict_metadata["conflict_type"] == "concurrent_update"


def test_second_offline_mark_of_the_same_lesson_is_an_offline_vs_online_conflict(schools, client_for, upload):
    a = schools.a
    data = {"student_id": str(a.student.pk), "group_id": str(a.group.pk), "status": "late"}
    body = upload(client_for(a.teacher_user), [op("attendance", data=data)])
    result = body["results"][0]
    assert result["status"] == "conflict"
    assert result["conflict"]["type"] == "offline_vs_online"
    assert result["recordId"] == str(a.attendance.pk)
    assert platform(lambda: Attendance.objects.get(pk=a.attendance.pk).status) == "late"


def test_feedback_conflict_teacher_authority(schools, client_for, upload):
    a = schools.a
    bump(FeedbackEntry, a.feedback.pk, rating=3)
    body = upload(
        client_for(a.teacher_user),
        [op("feedback_entries", "UPDATE", record_id=a.feedback.pk, version=1, data={"content": "Better"})],
    )
    assert body["results"][0]["conflict"]["winner"] == "client"
    assert platform(lambda: FeedbackEntry.objects.get(pk=a.feedback.pk).content) == "Better"


def test_home_task_conflict_merges_student_fields_from_device_and_teacher_fields_from_server(
    schools, client_for, upload
):
    a = schools.a
    bump(HomeTask, a.task.pk, teacher_feedback="Looks good", grading_status="graded")
    body = upload(
        client_for(a.student_user),
        [
            op(
                "home_tasks",
                "UPDATE",
                record_id=a.task.pk,
                version=1,
                data={"student_response": "My essay", "submission_timestamp": "2030-01-01T10:00:00+05:00"},
            )
        ],
    )
    result = body["results"][0]
    assert result["conflict"]["rule"] == "merge_task_submission"
    assert result["conflict"]["winner"] == "merged"
    task = platform(lambda: HomeTask.objects.get(pk=a.task.pk))
    assert task.student_response == "My essay"
    assert task.teacher_feedback == "Looks good"
    assert task.grading_status == "graded"


def test_home_task_merge_discards_teacher_fields_from_a_stale_device(schools, client_for, upload):
    a = schools.a
    bump(HomeTask, a.task.pk, teacher_feedback="From the web")
    body = upload(
        client_for(a.teacher_user),
        [op("home_tasks", "UPDATE", record_id=a.task.pk, version=1, data={"teacher_feedback": "From the phone"})],
    )
    assert body["results"][0]["conflict"]["discarded_fields"] == ["teacher_feedback"]
    assert platform(lambda: HomeTask.objects.get(pk=a.task.pk).teacher_feedback) == "From the web"


def student_prefs_op(school, strategy, version=1, **extra):
    return op(
        "students",
        "UPDATE",
        record_id=school.student.pk,
        version=version,
        data={"realtime_preferences": {"ranking_updates": False}},
        strategy=strategy,
        **extra,
    )


def test_other_tables_use_the_requested_strategy(schools, client_for, upload):
    a = schools.a
    student = client_for(a.student_user)
    bump(Student, a.student.pk, full_name="Renamed")
    server_wins = upload(student, [student_prefs_op(a, "server_wins")])["results"][0]
    assert server_wins["conflict"]["winner"] == "server"
    defaults = {"ranking_updates": True, "task_notifications": True, "achievement_alerts": True}
    assert platform(lambda: Student.objects.get(pk=a.student.pk).realtime_preferences) == defaults
    # A student is not an authority: teacher_authority keeps the server's record.
    authority = upload(student, [student_prefs_op(a, "teacher_authority")])["results"][0]
    assert authority["conflict"]["winner"] == "server"
    client_wins = upload(student, [student_prefs_op(a, "client_wins")])["results"][0]
    assert client_wins["conflict"]["winner"] == "client"
    assert platform(lambda: Student.objects.get(pk=a.student.pk).realtime_preferences) == {"ranking_updates": False}


def test_merge_fields_takes_device_fields_the_server_did_not_change(schools, client_for, upload):
    a = schools.a
    bump(Student, a.student.pk, full_name="Changed on server")
    base = {"full_name": "Old name", "status": "active"}
    platform(lambda: Student.objects.filter(pk=a.student.pk).update(full_name="Changed on server"))
    body = upload(
        client_for(a.admin_user),
        [
            op(
                "students",
                "UPDATE",
                record_id=a.student.pk,
                version=1,
                data={"full_name": "Device name", "status": "inactive"},
                oldData=base,
                strategy="merge_fields",
            )
        ],
    )
    result = body["results"][0]
    assert result["conflict"]["winner"] == "merged"
    assert result["conflict"]["applied_fields"] == ["status"]
    assert result["conflict"]["discarded_fields"] == ["full_name"]
    row = platform(lambda: Student.objects.get(pk=a.student.pk))
    assert (row.full_name, row.status) == ("Changed on server", "inactive")


def test_offline_data_hash_mismatch_is_a_conflict(schools, client_for, upload):
    a = schools.a
    bump(Student, a.student.pk, offline_data_hash="server-hash")
    body = upload(
        client_for(a.admin_user),
        [
            op(
                "students",
                "UPDATE",
                record_id=a.student.pk,
                data={"status": "inactive"},
                offlineDataHash="device-hash",
                strategy="server_wins",
            )
        ],
    )
    assert body["results"][0]["status"] == "conflict"
    assert platform(lambda: Student.objects.get(pk=a.student.pk).status) == "active"


def test_prompt_user_leaves_the_conflict_pending_and_the_user_resolves_it(schools, client_for, upload):
    a, b = schools.a, schools.b
    bump(Student, a.student.pk, full_name="Server")
    student = client_for(a.student_user)
    result = upload(student, [student_prefs_op(a, "prompt_user")])["results"][0]
    assert result["status"] == "conflict" and result["conflict"]["resolved"] is False
    row = platform(lambda: OfflineSyncOperation.objects.get(operation_id=result["id"]))
    assert row.sync_status == "conflict"

    pending = student.get(f"/api/realtime/conflicts/pending/{a.student_user.pk}").json()
    assert pending["totalCount"] == 1
    item = pending["conflicts"][0]
    assert item["id"] == str(row.pk)
    assert item["conflictFields"] == ["realtime_preferences"]
    assert item["serverData"]["full_name"] == "Server"

    # Another student, the parent, a teacher and another school may not see or resolve it.
    assert (
        client_for(a.other_student_user).get(f"/api/realtime/conflicts/pending/{a.student_user.pk}").status_code == 403
    )
    assert client_for(b.admin_user).get(f"/api/realtime/conflicts/pending/{a.student_user.pk}").status_code == 404
    assert (
        client_for(a.admin_user).get(f"/api/realtime/conflicts/pending/{a.student_user.pk}").json()["totalCount"] == 1
    )
    resolve = {
        "conflictId": str(row.pk),
        "resolution": "client_wins",
        "culturalConsiderations": {"respectsIslamicValues": True},
    }
    other = client_for(a.other_student_user).post("/api/realtime/conflicts/resolve", resolve, format="json")
    assert other.status_code == 404  # RLS: another user's queue row does not exist for them
    assert client_for(b.admin_user).post("/api/realtime/conflicts/resolve", resolve, format="json").status_code == 404
    approval = student.post("/api/realtime/conflicts/resolve", {**resolve, "adminApproval": True}, format="json")
    assert approval.status_code == 403 and approval.json()["error"]["code"] == "admin_approval_requires_admin"

    response = student.post("/api/realtime/conflicts/resolve", resolve, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["record"]["realtime_preferences"] == {"ranking_updates": False}
    stored = platform(lambda: OfflineSyncOperation.objects.get(pk=row.pk))
    assert stored.sync_status == "completed"
    assert stored.conflict_metadata["resolved_by"] == str(a.student_user.pk)
    assert stored.conflict_metadata["rule"] == "manual:client_wins"
    again = student.post("/api/realtime/conflicts/resolve", resolve, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict_not_pending"
    assert student.get(f"/api/realtime/conflicts/pending/{a.student_user.pk}").json()["totalCount"] == 0


def test_resolve_validates_its_body(schools, client_for):
    response = client_for(schools.a.admin_user).post(
        "/api/realtime/conflicts/resolve", {"conflictId": "nope", "resolution": "coin_flip"}, format="json"
    )
    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"conflictId", "resolution"}
