"""Savepoint per operation inside batch transactions: failures stay isolated, outcomes are kept."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from harry_realtime.tenancy import Tenant, dangerously_platform_context
from school.models import FeedbackEntry, HomeTask
from syncqueue import apply
from syncqueue.api.serializers import parse_operation
from syncqueue.models import OfflineSyncOperation
from syncqueue.upload import OPERATIONS_PER_TRANSACTION, operations_upload

from .conftest import op

# Each chunk commits on its own: test against committed data, as the server runs.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


def platform(fn):
    with dangerously_platform_context():
        return fn()


def feedback(school, content):
    return op("feedback_entries", data={"student_id": str(school.student.pk), "content": content})


def test_a_database_error_in_one_operation_rolls_back_only_that_operation(schools, client_for, upload):
    a, b = schools.a, schools.b
    # School B's task id: invisible to A (RLS), so the INSERT reaches the primary key and fails,
    # answered as any taken id.
    clash = op(
        "home_tasks",
        data={"student_id": str(a.student.pk), "group_id": str(a.group.pk), "title": "Clash"},
        recordId=str(b.task.pk),
    )
    ops = [feedback(a, "before"), clash, feedback(a, "after")]
    body = upload(client_for(a.teacher_user), ops)
    assert [r["status"] for r in body["results"]] == ["completed", "failed", "completed"]
    assert body["results"][1]["error"]["code"] == "already_exists"
    assert platform(lambda: FeedbackEntry.objects.filter(content__in=["before", "after"]).count()) == 2
    assert platform(lambda: HomeTask.objects.get(pk=b.task.pk).title) != "Clash"
    stored = platform(lambda: dict(OfflineSyncOperation.objects.values_list("operation_id", "sync_status")))
    assert stored == {ops[0]["id"]: "completed", ops[1]["id"]: "failed", ops[2]["id"]: "completed"}


def test_batch_longer_than_one_transaction_applies_every_operation_once_in_order(schools, client_for, upload):
    a = schools.a
    count = OPERATIONS_PER_TRANSACTION * 2 + 7
    ops = [feedback(a, f"bulk {i}") for i in range(count)]
    client = client_for(a.teacher_user)
    body = upload(client, ops)
    assert body["summary"] == {"completed": count}
    assert body["appliedOrder"] == [o["id"] for o in ops]  # equal priority: device clock order
    again = upload(client, ops)
    assert again["summary"] == {"duplicate": count}
    assert platform(lambda: FeedbackEntry.objects.filter(content__startswith="bulk ").count()) == count
    assert platform(lambda: OfflineSyncOperation.objects.filter(sync_status="processing").count()) == 0


def test_an_unexpected_error_keeps_the_operations_before_it_and_releases_the_rest(schools, monkeypatch):
    a = schools.a
    ops = [feedback(a, f"crash {i}") for i in range(5)]
    real_new_row = apply._new_row

    def new_row(spec, actor, op, changes, *, id_free):
        if op.data["content"] == "crash 2":
            raise RuntimeError("a bug")
        return real_new_row(spec, actor, op, changes, id_free=id_free)

    monkeypatch.setattr(apply, "_new_row", new_row)
    tenant = Tenant(organization_id=a.org.pk, user_id=a.teacher_user.pk, role="teacher")
    parsed = [parse_operation(o, batch_context={}) for o in ops]
    with pytest.raises(RuntimeError, match="a bug"):
        operations_upload(tenant=tenant, device_id="crashy", operations=parsed)

    stored = platform(lambda: dict(OfflineSyncOperation.objects.values_list("operation_id", "sync_status")))
    assert stored == {ops[0]["id"]: "completed", ops[1]["id"]: "completed"}
    assert platform(lambda: FeedbackEntry.objects.filter(content__startswith="crash ").count()) == 2

    # The device retries the batch once the bug is fixed: the rest applies, the first two are repeats.
    monkeypatch.setattr(apply, "_new_row", real_new_row)
    parsed = [parse_operation(o, batch_context={}) for o in ops]
    body = operations_upload(tenant=tenant, device_id="crashy", operations=parsed)
    assert [r["status"] for r in body["results"]] == ["duplicate"] * 2 + ["completed"] * 3
    assert platform(lambda: FeedbackEntry.objects.filter(content__startswith="crash ").count()) == 5


def task(school, title, **extra):
    data = {"student_id": str(school.student.pk), "group_id": str(school.group.pk), "title": title}
    return op("home_tasks", data=data, **extra)


def task_events():
    from events.models import RealtimeEvent

    return platform(
        lambda: list(
            RealtimeEvent.objects.filter(source_table="home_tasks", event_payload__title__startswith="together")
            .order_by("seq")
            .values_list("event_payload__title", flat=True)
        )
    )


def test_inserts_written_together_keep_their_order_and_events(schools, client_for, upload):
    a = schools.a
    ops = [task(a, f"together {i}", priority=9 - i) for i in range(6)]
    with CaptureQueriesContext(connection) as queries:
        body = upload(client_for(a.teacher_user), list(reversed(ops)))
    assert sum('INSERT INTO "home_tasks"' in q["sql"] for q in queries.captured_queries) == 1
    assert body["appliedOrder"] == [o["id"] for o in ops]  # priority order, whatever the upload order
    assert all(r["status"] == "completed" and r["syncVersion"] == 1 for r in body["results"])
    assert task_events() == [f"together {i}" for i in range(6)]


def test_a_failing_row_among_inserts_written_together_fails_alone(schools, client_for, upload):
    a, b = schools.a, schools.b
    # School B's task id is invisible to A, so the plan thinks it free and the multi-row INSERT
    # fails on the primary key; each operation then runs on its own.
    ops = [task(a, "together 0"), task(a, "together clash", recordId=str(b.task.pk)), task(a, "together 2")]
    body = upload(client_for(a.teacher_user), ops)
    assert [r["status"] for r in body["results"]] == ["completed", "failed", "completed"]
    assert body["results"][1]["error"]["code"] == "already_exists"
    assert task_events() == ["together 0", "together 2"]  # nothing of the failed statement stays
    assert platform(lambda: HomeTask.objects.filter(title__startswith="together").count()) == 2


def test_an_update_after_planned_inserts_sees_the_row_they_wrote(schools, client_for, upload):
    a = schools.a
    record_id = "5f0b7a52-7c1e-4a55-9f3e-2a6f1c0de001"
    insert = task(a, "together draft", recordId=record_id, priority=9)
    other = task(a, "together other", priority=8)
    update = op("home_tasks", "UPDATE", data={"title": "together final"}, record_id=record_id, version=1, priority=1)
    body = upload(client_for(a.teacher_user), [update, other, insert])
    assert body["appliedOrder"] == [insert["id"], other["id"], update["id"]]
    assert [r["status"] for r in body["results"]] == ["completed"] * 3
    assert platform(lambda: HomeTask.objects.get(pk=record_id).title) == "together final"
    assert task_events() == ["together draft", "together other", "together final"]
