"""Issue 13 item 5: only the student's own teachers and the school's admins send a teacher message;
everyone else (the student, a parent, another teacher) gets 403 with a code, never a 201 or 500."""

from __future__ import annotations

import pytest

from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import PushNotification

pytestmark = pytest.mark.django_db

URL = "/api/notifications/teacher-messages"


def _send(client_for, sender, student):
    return client_for(sender).post(URL, {"student_id": str(student.pk), "message": "Well done"}, format="json")


def _messages_about(student) -> int:
    with dangerously_platform_context():
        return PushNotification.objects.filter(
            notification_type="teacher_message", cultural_context__student_id=str(student.pk)
        ).count()


@pytest.mark.parametrize("who", ["student_user", "parent_user", "outsider_user"])
def test_anyone_but_the_students_teachers_and_admins_is_refused(schools, client_for, who):
    a = schools.a
    response = _send(client_for, getattr(a, who), a.student)
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "teacher_message_not_allowed"
    assert _messages_about(a.student) == 0


def test_a_student_cannot_message_another_student_either(schools, client_for):
    a = schools.a
    response = _send(client_for, a.student_user, a.other_student)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "teacher_message_not_allowed"


def test_the_students_teacher_and_the_schools_admin_may_send(schools, client_for):
    a = schools.a
    assert _send(client_for, a.teacher_user, a.student).status_code == 201
    assert _send(client_for, a.admin_user, a.student).status_code == 201
    # Student and parent, once for each sender.
    assert _messages_about(a.student) == 4


def test_another_schools_admin_does_not_find_the_student(schools, client_for):
    response = _send(client_for, schools.b.admin_user, schools.a.student)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "student_not_found"
