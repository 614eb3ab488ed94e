"""Exactly once under concurrency: two connections upload the same batch at the same moment."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from harry_realtime.auth import issue_access_token
from harry_realtime.tenancy import dangerously_platform_context
from school.models import Attendance, FeedbackEntry
from syncqueue.models import OfflineSyncOperation

from .conftest import op

# Committed data across connections; only the owner alias may flush the tables between tests.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


def post_concurrently(user, batches: list[dict]) -> list:
    token = issue_access_token(user)
    barrier = threading.Barrier(len(batches))
    responses: list = [None] * len(batches)

    def run(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            barrier.wait()
            responses[index] = client.post("/api/realtime/sync/queue", batches[index], format="json")
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return responses


def test_same_batch_from_two_connections_at_once_applies_each_operation_once(schools):
    a = schools.a
    ops = [op("feedback_entries", data={"student_id": str(a.student.pk), "content": f"note {i}"}) for i in range(25)]
    ops.append(op("attendance", "UPDATE", record_id=a.attendance.pk, version=1, data={"status": "late"}))
    ops.append(op("home_tasks", "UPDATE", record_id=a.task.pk, version=1, data={"title": "Essay, again"}))
    batch = {"deviceId": "tablet-7", "operations": ops}

    first, second = post_concurrently(a.teacher_user, [batch, batch])

    assert first.status_code == second.status_code == 200
    statuses = list(
        zip(
            (r["status"] for r in first.json()["results"]), (r["status"] for r in second.json()["results"]), strict=True
        )
    )
    for pair in statuses:
        # One connection applied it, the other got its stored outcome.
        assert sorted(pair) == ["completed", "duplicate"], pair
    with dangerously_platform_context():
        assert FeedbackEntry.objects.filter(content__startswith="note ").count() == 25
        assert OfflineSyncOperation.objects.filter(device_id="tablet-7").count() == len(ops)
        # Applied once: one bump of the version, not two.
        assert Attendance.objects.get(pk=a.attendance.pk).sync_version == 2
        assert a.task.__class__.objects.get(pk=a.task.pk).sync_version == 2


def test_duplicate_results_carry_the_original_outcome(schools):
    a = schools.a
    batch = {
        "deviceId": "tablet-8",
        "operations": [op("feedback_entries", data={"student_id": str(a.student.pk), "content": "once"})],
    }
    first, second = post_concurrently(a.teacher_user, [batch, batch])
    results = sorted([first.json()["results"][0], second.json()["results"][0]], key=lambda r: r["status"])
    completed, duplicate = results
    assert duplicate["original"] == completed
