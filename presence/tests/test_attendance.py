"""Attendance collaboration: marking claims, conflicts, the teacher limit and the broadcasts."""

import time

import pytest
from django.test import override_settings

from events.topics import attendance_topic
from harry_realtime.tenancy import dangerously_platform_context
from presence import marking
from school.models import Attendance

pytestmark = pytest.mark.django_db

MARK = "/api/realtime/attendance/mark"
MARKING = "/api/realtime/attendance/marking"


def mark(client, school, status="late", student=None, **extra):
    body = {"groupId": str(school.group.pk), "studentId": str((student or school.student).pk), "status": status}
    return client.post(MARK, {**body, **extra}, format="json")


def stored_status(school):
    with dangerously_platform_context():
        return Attendance.objects.get(pk=school.attendance.pk).status


def test_mark_writes_attendance_and_broadcasts_progress_then_completion(
    schools, client_for, listen, django_capture_on_commit_callbacks
):
    a = schools.a
    listener = listen(attendance_topic(a.org.pk, a.group.pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = mark(client_for(a.teacher_user), a, notes="bus was late")
    assert response.status_code == 200, response.json()
    assert response.json()["attendance"]["status"] == "late"
    assert stored_status(a) == "late"
    messages = listener.receive_all()
    assert [m["event"] for m in messages] == ["marking_in_progress", "marking_completed"]
    progress, completed = messages
    assert progress["type"] == "realtime.broadcast"
    assert progress["topic"] == attendance_topic(a.org.pk, a.group.pk)
    assert (progress["meta"], progress["sender"]) == (None, None)
    assert progress["payload"]["teacher"]["userId"] == str(a.teacher_user.pk)
    assert progress["payload"]["studentId"] == str(a.student.pk)
    assert completed["payload"]["result"]["attendanceId"] == str(a.attendance.pk)
    assert completed["payload"]["status"] == "late"


def test_a_second_teacher_marking_the_same_student_gets_a_conflict(schools, client_for, co_teacher_for, listen):
    a = schools.a
    colleague = co_teacher_for(a, "colleague")
    assert mark(client_for(a.teacher_user), a, status="late").status_code == 200
    listener = listen(attendance_topic(a.org.pk, a.group.pk))
    response = mark(client_for(colleague), a, status="absent")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "concurrent_marking"
    (conflict,) = error["details"]["conflicts"]
    assert conflict["studentId"] == str(a.student.pk)
    assert conflict["markingTeacher"]["userId"] == str(a.teacher_user.pk)
    assert stored_status(a) == "late"
    assert listener.receive_all(timeout=0.2) == []


def test_start_marking_claims_students_and_tells_the_group(
    schools, client_for, co_teacher_for, listen, django_capture_on_commit_callbacks
):
    a = schools.a
    colleague = co_teacher_for(a, "colleague")
    listener = listen(attendance_topic(a.org.pk, a.group.pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(a.teacher_user).post(MARKING, {"groupId": str(a.group.pk)}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["studentIds"] == [str(a.student.pk)]
    assert [t["userId"] for t in response.json()["markingTeachers"]] == [str(a.teacher_user.pk)]
    (message,) = listener.receive_all()
    assert message["event"] == "marking_in_progress"
    assert message["payload"]["studentIds"] == [str(a.student.pk)]
    assert mark(client_for(colleague), a).json()["error"]["code"] == "concurrent_marking"
    with django_capture_on_commit_callbacks(execute=True):
        finished = client_for(a.teacher_user).delete(f"{MARKING}/{a.group.pk}")
    assert finished.json()["studentIds"] == [str(a.student.pk)]
    assert [m["event"] for m in listener.receive_all()] == ["marking_completed"]
    assert mark(client_for(colleague), a, status="sick").status_code == 200
    assert stored_status(a) == "sick"


@override_settings(ATTENDANCE_MARKING_WINDOW_SECONDS=1)
def test_the_claim_lapses_after_the_marking_window(schools, client_for, co_teacher_for):
    a = schools.a
    colleague = co_teacher_for(a, "colleague")
    assert mark(client_for(a.teacher_user), a).status_code == 200
    assert mark(client_for(colleague), a).status_code == 409
    time.sleep(1.1)
    assert mark(client_for(colleague), a, status="excused").status_code == 200
    assert stored_status(a) == "excused"


def test_at_most_three_teachers_mark_one_group(schools, client_for, co_teacher_for):
    a = schools.a
    teachers = [a.teacher_user] + [co_teacher_for(a, f"co{i}") for i in range(3)]
    for user in teachers[:3]:
        response = client_for(user).post(MARKING, {"groupId": str(a.group.pk), "studentIds": []}, format="json")
        assert response.status_code == 200, response.json()
    response = client_for(teachers[3]).post(MARKING, {"groupId": str(a.group.pk), "studentIds": []}, format="json")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "marking_limit_reached"
    assert error["details"]["maxConcurrentMarkers"] == 3
    assert len(error["details"]["markingTeachers"]) == 3
    assert mark(client_for(teachers[3]), a).json()["error"]["code"] == "marking_limit_reached"
    # One of the three finishing frees a place.
    client_for(teachers[0]).delete(f"{MARKING}/{a.group.pk}")
    assert mark(client_for(teachers[3]), a).status_code == 200


def test_concurrent_claims_for_one_student_have_exactly_one_winner(schools):
    group = str(schools.a.group.pk)
    student = str(schools.a.student.pk)
    results = [marking.claim(group_id=group, user_id=f"user-{i}", student_ids=[student]) for i in range(3)]
    assert [r.ok for r in results] == [True, False, False]
    assert results[1].conflicts[0].user_id == "user-0"


def test_admin_may_override_a_teachers_claim_but_a_teacher_may_not(schools, client_for, co_teacher_for):
    a = schools.a
    colleague = co_teacher_for(a, "colleague")
    assert mark(client_for(a.teacher_user), a).status_code == 200
    refused = mark(client_for(colleague), a, override=True)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    response = mark(client_for(a.admin_user), a, status="present", override=True)
    assert response.status_code == 200, response.json()
    assert stored_status(a) == "present"


def test_marking_refuses_other_schools_and_unrelated_teachers(schools, client_for):
    a, b = schools.a, schools.b
    teacher = client_for(a.teacher_user)
    other_group = teacher.post(MARK, {"groupId": str(b.group.pk), "studentId": str(b.student.pk), "status": "late"})
    assert (other_group.status_code, other_group.json()["error"]["code"]) == (404, "group_not_found")
    other_student = mark(teacher, a, student=b.student)
    assert (other_student.status_code, other_student.json()["error"]["code"]) == (400, "student_not_in_group")
    not_enrolled = mark(teacher, a, student=a.other_student)
    assert not_enrolled.json()["error"]["code"] == "student_not_in_group"
    outsider = mark(client_for(a.outsider_user), a)
    assert (outsider.status_code, outsider.json()["error"]["code"]) == (403, "forbidden")
    student = mark(client_for(a.student_user), a)
    assert student.status_code == 403
    assert stored_status(a) == "present"
    with dangerously_platform_context():
        assert Attendance.objects.filter(student=b.student).count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"status": "teleported"},
        {"studentId": "x"},
        {"attendanceDate": "yesterday"},
    ],
)
def test_mark_bad_input(schools, client_for, body):
    a = schools.a
    response = mark(client_for(a.teacher_user), a, **body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert stored_status(a) == "present"
