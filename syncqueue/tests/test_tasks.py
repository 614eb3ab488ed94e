"""The retry worker, called directly against the real database."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from harry_realtime.tenancy import dangerously_platform_context
from school.models import Attendance
from syncqueue.models import OfflineSyncOperation
from syncqueue.tasks import retry_due_operations

from .conftest import op

# Committed data across connections; only the owner alias may flush the tables between tests.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


class RowLock:
    """Holds a row lock from another connection, as a long web-app transaction would."""

    def __init__(self, pk):
        self.pk = pk
        self.locked = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            with dangerously_platform_context():
                Attendance.objects.select_for_update().get(pk=self.pk)
                self.locked.set()
                self.release.wait(30)
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        assert self.locked.wait(10)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(10)


@pytest.fixture
def fast_retries(settings):
    settings.SYNC_LOCK_TIMEOUT_MS = 200
    settings.SYNC_RETRY_BASE_SECONDS = 0
    settings.SYNC_MAX_RETRIES = 2


def stored(operation_id):
    with dangerously_platform_context():
        return OfflineSyncOperation.objects.get(operation_id=operation_id)


def test_lock_timeout_is_queued_and_the_worker_applies_it_later(schools, client_for, upload, fast_retries):
    a, b = schools.a, schools.b
    update_a = op("attendance", "UPDATE", record_id=a.attendance.pk, version=1, data={"status": "late"})
    update_b = op("attendance", "UPDATE", record_id=b.attendance.pk, version=1, data={"status": "sick"})
    with RowLock(a.attendance.pk), RowLock(b.attendance.pk):
        result_a = upload(client_for(a.teacher_user), [update_a])["results"][0]
        result_b = upload(client_for(b.teacher_user), [update_b], device="phone-b")["results"][0]
    assert result_a["status"] == "pending"
    assert result_a["error"]["code"] == "transient_error" and result_a["error"]["retryable"] is True
    row = stored(update_a["id"])
    assert row.sync_status == "pending" and row.next_retry_at is not None and row.retry_count == 0
    assert result_b["status"] == "pending"

    assert retry_due_operations() == {"completed": 2}

    row = stored(update_a["id"])
    assert (row.sync_status, row.retry_count, row.next_retry_at) == ("completed", 1, None)
    assert row.result["status"] == "completed" and row.result["syncVersion"] == 2
    with dangerously_platform_context():
        assert Attendance.objects.get(pk=a.attendance.pk).status == "late"
        assert Attendance.objects.get(pk=b.attendance.pk).status == "sick"
    # A retried upload of the same operation now returns the worker's outcome.
    again = upload(client_for(a.teacher_user), [update_a])["results"][0]
    assert again["status"] == "duplicate" and again["original"]["status"] == "completed"
    assert retry_due_operations() == {}


def test_worker_backs_off_then_fails_after_max_retries(schools, client_for, upload, fast_retries, settings):
    a = schools.a
    update = op("attendance", "UPDATE", record_id=a.attendance.pk, version=1, data={"status": "late"})
    with RowLock(a.attendance.pk):
        upload(client_for(a.teacher_user), [update])
        assert retry_due_operations() == {"pending": 1}
        row = stored(update["id"])
        assert row.retry_count == 1 and row.next_retry_at is not None
        assert retry_due_operations() == {"failed": 1}
    row = stored(update["id"])
    assert row.sync_status == "failed" and row.next_retry_at is None and row.failed_at is not None
    assert row.result["error"]["code"] == "retries_exhausted"
    assert "lock" in row.error_message
    with dangerously_platform_context():
        assert Attendance.objects.get(pk=a.attendance.pk).status == "present"


def test_backoff_is_exponential_and_not_due_operations_wait(schools, client_for, upload, settings):
    settings.SYNC_LOCK_TIMEOUT_MS = 200
    settings.SYNC_RETRY_BASE_SECONDS = 60
    a = schools.a
    update = op("attendance", "UPDATE", record_id=a.attendance.pk, version=1, data={"status": "late"})
    with RowLock(a.attendance.pk):
        before = timezone.now()
        upload(client_for(a.teacher_user), [update])
    row = stored(update["id"])
    assert timedelta(seconds=59) < row.next_retry_at - before < timedelta(seconds=62)
    assert retry_due_operations() == {}  # not due yet
    with dangerously_platform_context():
        OfflineSyncOperation.objects.filter(pk=row.pk).update(next_retry_at=timezone.now(), retry_count=1)
    with RowLock(a.attendance.pk):
        before = timezone.now()
        assert retry_due_operations() == {"pending": 1}
    row = stored(update["id"])
    # 60 s * 2**2 after the second failed try.
    assert timedelta(seconds=239) < row.next_retry_at - before < timedelta(seconds=242)


def test_beat_schedules_the_worker(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["syncqueue-retry-due-operations"]
    assert entry["task"] == retry_due_operations.name
