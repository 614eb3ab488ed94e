"""Property: a shuffled batch with repeats ends in the same state as the deduplicated batch
applied once, operation by operation, in priority order."""

import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harry_realtime.tenancy import dangerously_platform_context
from school.models import Attendance, FeedbackEntry, HomeTask
from syncqueue.policy import effective_priority

STATUSES = ["present", "absent", "late", "sick", "excused", "emergency"]
FEEDBACK_IDS = [uuid.UUID(int=1), uuid.UUID(int=2)]
DATES = ["2030-06-01", "2030-06-02"]

operation = st.one_of(
    st.tuples(st.just("mark"), st.sampled_from(DATES), st.sampled_from(STATUSES)),
    st.tuples(st.just("update_attendance"), st.integers(1, 3), st.sampled_from(STATUSES)),
    st.tuples(st.just("update_task"), st.integers(1, 3), st.text("abcxyz ", min_size=1, max_size=8)),
    st.tuples(st.just("feedback"), st.sampled_from(FEEDBACK_IDS), st.text("pqrs", min_size=1, max_size=6)),
)


def build(school, specs, priorities, base):
    ops = []
    for i, ((kind, a, b), priority) in enumerate(zip(specs, priorities, strict=True)):
        body = {"id": f"p{i}", "priority": priority, "timestamp": (base + timedelta(seconds=i % 3)).isoformat()}
        if kind == "mark":
            data = {"student_id": str(school.student.pk), "group_id": str(school.group.pk), "status": b}
            body |= {"operation": "INSERT", "tableName": "attendance", "data": {**data, "attendance_date": a}}
        elif kind == "update_attendance":
            body |= {"operation": "UPDATE", "tableName": "attendance", "recordId": str(school.attendance.pk)}
            body |= {"syncVersion": a, "data": {"status": b}}
        elif kind == "update_task":
            body |= {"operation": "UPDATE", "tableName": "home_tasks", "recordId": str(school.task.pk)}
            body |= {"syncVersion": a, "data": {"title": b}}
        else:
            body |= {"operation": "INSERT", "tableName": "feedback_entries", "recordId": str(a)}
            body |= {"data": {"student_id": str(school.student.pk), "content": b}}
        ops.append(body)
    return ops


def priority_order(ops):
    def key(o):
        p = effective_priority(
            table_name=o["tableName"],
            data=o["data"],
            role="teacher",
            cultural_context={},
            prayer_time_context=None,
            battery_mode="standard",
        )
        return (-p, -o["priority"], o["timestamp"], o["id"])

    return sorted(ops, key=key)


def state(school):
    with dangerously_platform_context():
        return {
            "attendance": sorted(
                Attendance.objects.filter(student=school.student).values_list(
                    "attendance_date", "status", "sync_version"
                )
            ),
            "task": HomeTask.objects.filter(pk=school.task.pk).values_list("title", "sync_version").get(),
            "feedback": sorted(
                FeedbackEntry.objects.filter(pk__in=FEEDBACK_IDS).values_list("id", "content", "sync_version")
            ),
        }


def in_rollback(fn):
    savepoint = transaction.savepoint()
    try:
        return fn()
    finally:
        transaction.savepoint_rollback(savepoint)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(operation, min_size=1, max_size=8),
    priorities=st.data(),
    repeats=st.data(),
    shuffle=st.randoms(use_true_random=False),
)
def test_shuffled_duplicated_batch_equals_deduplicated_batch_in_priority_order(
    schools, client_for, specs, priorities, repeats, shuffle
):
    school = schools.a
    client = client_for(school.teacher_user)
    base = timezone.now() - timedelta(hours=1)
    ops = build(
        school, specs, priorities.draw(st.lists(st.integers(1, 10), min_size=len(specs), max_size=len(specs))), base
    )
    extra = repeats.draw(st.lists(st.sampled_from(ops), max_size=len(ops)))
    noisy = ops + extra
    shuffle.shuffle(noisy)

    def noisy_run():
        body = client.post("/api/realtime/sync/queue", {"deviceId": "noisy", "operations": noisy}, format="json").json()
        statuses = {}
        for result in body["results"]:
            if result["status"] != "duplicate":
                assert result["id"] not in statuses, "an operation applied twice"
                statuses[result["id"]] = result["status"]
        assert set(statuses) == {o["id"] for o in ops}
        return state(school), statuses

    def ordered_run():
        statuses = {}
        for o in priority_order(ops):
            body = client.post("/api/realtime/sync/queue", {"deviceId": "ordered", "operations": [o]}, format="json")
            statuses[o["id"]] = body.json()["results"][0]["status"]
        return state(school), statuses

    assert in_rollback(noisy_run) == in_rollback(ordered_run)
