"""Issue 13 item 2: another school cannot block a user's offline writes.

The exactly-once key of offline_sync_queue holds the user (and so the school): the same
(device id, operation id) from two users are two operations. An INSERT whose record id is used
in another school answers exactly as an id that is simply taken: no constraint names, no oracle.
"""

from __future__ import annotations

import json

import pytest

from harry_realtime.tenancy import dangerously_platform_context
from school.models import FeedbackEntry, HomeTask
from syncqueue.models import OfflineSyncOperation
from syncqueue.tests.conftest import op

# Uploads commit chunk by chunk, as the server runs.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


def _upload(client, operations, device="victim-phone-1"):
    response = client.post("/api/realtime/sync/queue", {"deviceId": device, "operations": operations}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def _feedback(school, content, op_id="op-1"):
    return op("feedback_entries", data={"student_id": str(school.student.pk), "content": content}, op_id=op_id)


def test_the_same_ids_from_another_school_do_not_block_a_users_operation(schools, client_for):
    a, b = schools.a, schools.b
    # School B's student takes the teacher's device and operation ids first.
    first = _upload(client_for(b.student_user), [_feedback(b, "from samarkand")])
    assert first["results"][0]["id"] == "op-1"

    body = _upload(client_for(a.teacher_user), [_feedback(a, "from tashkent")])

    result = body["results"][0]
    assert result["status"] == "completed", result
    assert "error" not in result and "original" not in result
    with dangerously_platform_context():
        assert FeedbackEntry.objects.filter(content="from tashkent").count() == 1
        owners = set(
            OfflineSyncOperation.objects.filter(device_id="victim-phone-1", operation_id="op-1").values_list(
                "user_id", flat=True
            )
        )
    assert owners == {a.teacher_user.pk, b.student_user.pk}


def test_two_users_of_one_school_with_the_same_ids_are_two_operations(schools, client_for):
    a = schools.a
    by_teacher = _upload(client_for(a.teacher_user), [_feedback(a, "teacher's note")], device="shared-tablet")
    by_admin = _upload(client_for(a.admin_user), [_feedback(a, "admin's note")], device="shared-tablet")
    assert by_teacher["results"][0]["status"] == by_admin["results"][0]["status"] == "completed"
    # Each user's repeat is still a duplicate of their own outcome, never of the other's.
    again = _upload(client_for(a.admin_user), [_feedback(a, "admin's note")], device="shared-tablet")
    assert again["results"][0]["status"] == "duplicate"
    assert again["results"][0]["original"] == by_admin["results"][0]


def _insert_task(school, record_id, op_id):
    data = {"student_id": str(school.student.pk), "group_id": str(school.group.pk), "title": "Mine now"}
    return op("home_tasks", data=data, recordId=str(record_id), op_id=op_id)


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "among-inserts-written-together"])
def test_a_record_id_of_another_school_answers_as_a_taken_id(schools, client_for, alone):
    a, b = schools.a, schools.b
    client = client_for(a.teacher_user)
    extra = [] if alone else [_feedback(a, "neighbour", op_id="op-n")]
    own = _upload(client, [_insert_task(a, a.task.pk, "op-own"), *extra], device="d-own")["results"][0]
    foreign = _upload(client, [_insert_task(a, b.task.pk, "op-foreign"), *extra], device="d-foreign")["results"][0]

    assert own["status"] == foreign["status"] == "failed"
    assert own["error"] == foreign["error"]
    assert foreign["error"]["code"] == "already_exists"
    assert {k: v for k, v in own.items() if k not in ("id", "recordId")} == {
        k: v for k, v in foreign.items() if k not in ("id", "recordId")
    }
    text = json.dumps(foreign["error"]).lower()
    for leak in ("pkey", "constraint", "duplicate key", "home_tasks", "elsewhere", "another"):
        assert leak not in text, leak
    with dangerously_platform_context():
        assert HomeTask.objects.get(pk=b.task.pk).title != "Mine now"
        assert HomeTask.objects.get(pk=a.task.pk).title != "Mine now"
