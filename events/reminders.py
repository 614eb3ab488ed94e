"""Deadline reminders: `deadline_reminder` on the student's `tasks:org_{org}:student_{id}` topic
for home tasks not yet submitted that are due within the next 24 hours, and again within the
last hour; once per task, student and threshold (a notice, events/notices.py).

A task first seen inside the last hour gets only the one-hour reminder. Like other task events the
reminder waits out the school's prayer window (the listener holds `task_assignment` events), and
goes to push when no socket of the student took it (`events.hand_undelivered_to_push`); the
student's `realtime_preferences.task_notifications: false` silences that push.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef, TextField, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Concat
from django.utils.translation import gettext_lazy as _

from culture.messages import multilingual
from events.models import RealtimeEvent
from events.notices import Notice, notices_store
from events.topics import tasks_topic
from school.models import HomeTask

# (threshold name, how long before the due time), tightest first.
THRESHOLDS = (("1h", timedelta(hours=1)), ("24h", timedelta(hours=24)))
TITLE = _("Task due soon")
MESSAGES = {
    "24h": _("“%(task)s” is due within 24 hours."),
    "1h": _("“%(task)s” is due within the hour."),
}


def _not_reminded(threshold: str) -> Exists:
    """Whether the student already has this task's reminder for the threshold (an index look-up
    on the notice key)."""
    key = Concat(
        Value("deadline:"), Cast(OuterRef("pk"), TextField()), Value(f":{threshold}"), output_field=TextField()
    )
    sent = (
        RealtimeEvent.objects.filter(event_metadata__has_key="notice_key", target_user_id=OuterRef("student__user_id"))
        .alias(notice_key=KT("event_metadata__notice_key"))
        .filter(notice_key=key)
    )
    return ~Exists(sent)


def _due(now: datetime, limit: int) -> list[tuple[str, HomeTask]]:
    """(threshold, task) for tasks not submitted, due within a threshold, not yet reminded for it."""
    open_tasks = HomeTask.objects.filter(
        grading_status=HomeTask.GradingStatus.NOT_SUBMITTED,
        deleted_at__isnull=True,
        student__user__isnull=False,
        student__user__is_active=True,
    ).select_related("student__user")
    out: list[tuple[str, HomeTask]] = []
    start = now
    for threshold, ahead in THRESHOLDS:
        window = open_tasks.filter(due_date__gt=start, due_date__lte=now + ahead).filter(_not_reminded(threshold))
        out += [(threshold, task) for task in window.order_by("due_date")[: limit - len(out)]]
        start = now + ahead
    return out


def deadline_reminders_send(*, now: datetime, limit: int = 1000) -> int:
    """Store the reminders due now; returns how many were new. Platform context (a beat job)."""
    notices = []
    for threshold, task in _due(now, limit):
        user = task.student.user
        params = {"task": task.title}
        notices.append(
            Notice(
                organization_id=task.organization_id,
                recipient_id=user.pk,
                recipient_role=user.role,
                language=user.language,
                topic=tasks_topic(task.organization_id, task.student_id),
                event="deadline_reminder",
                kind="deadline_reminder",
                notice_key=f"deadline:{task.pk}:{threshold}",
                event_type="task_assignment",
                event_category="educational",
                priority="high",
                payload={
                    "taskId": str(task.pk),
                    "studentId": str(task.student_id),
                    "taskTitle": task.title,
                    "dueDate": task.due_date.isoformat(),
                    "threshold": threshold,
                },
                texts={"title": multilingual(TITLE), "message": multilingual(MESSAGES[threshold], **params)},
                audience={"student_user_id": str(user.pk)},
                expires_in=max(task.due_date - now, timedelta(minutes=5)),
            )
        )
    return len(notices_store(notices))
