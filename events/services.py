"""Broadcast writes: store the event first, then fan it out to topic groups on commit.

Fan-out sends a `BroadcastMessage` (events/messages.py) to `group_name(topic)`. Stored
broadcasts carry `meta.id = seq` like the listener's messages, are stored with `processed_at`
set (this service already fanned them out, so the listener skips them), and
`event_metadata.topics`/`event` so replay and the poll fallback find them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from events.broadcast_policy import BroadcastRefused, broadcast_check
from events.limits import max_payload_bytes
from events.messages import broadcast_message, client_broadcast_message
from events.models import RealtimeEvent
from events.prayer_hold import prayer_release_at
from events.protocol import payload_size
from events.topics import (
    TopicDenied,
    attendance_topic,
    authorize_topic,
    group_name,
    groups_topic,
    notifications_topic,
    rankings_topic,
    tasks_topic,
)
from harry_realtime.errors import Forbidden, Invalid, TooLarge
from notifications.models import EVENT_PRIORITY_TO_PUSH
from notifications.services import push_notification_send
from school import selectors
from school.models import Group, Role, Student, StudentGroupEnrollment, Teacher, User

# BroadcastEventRequest.eventType -> (realtime_events.event_type, event_category)
EVENT_TYPES = {
    "ranking_update": ("student_ranking_update", "gamification"),
    "achievement_earned": ("achievement_earned", "gamification"),
    "task_assignment": ("task_assignment", "educational"),
    "attendance_sync": ("attendance_sync", "educational"),
    "teacher_message": ("teacher_communication", "communication"),
}
SCOPES = ("individual", "group", "organization")
# The spec's delivery method `in_app` is the socket; the table's vocabulary calls it websocket.
DELIVERY_METHODS = {"websocket": "websocket", "in_app": "websocket", "push_notification": "push_notification"}
# BroadcastEventRequest.eventType -> push_notifications.notification_type
PUSH_TYPES = {
    "ranking_update": "ranking_update",
    "achievement_earned": "achievement_earned",
    "task_assignment": "task_assigned",
    "attendance_sync": "attendance_reminder",
    "teacher_message": "teacher_message",
}
# realtime_events.priority -> push_notifications.priority (the two tables use different words)


@dataclass(frozen=True)
class Target:
    topics: tuple[str, ...]
    user: User | None = None
    group: Group | None = None


def fan_out(*, topic: str, event: str, payload: Any, meta: dict | None = None) -> None:
    """Send one of the server's broadcasts to every socket joined to `topic`, on any server process."""
    message = broadcast_message(topic=topic, event=event, payload=payload, meta=meta)
    async_to_sync(get_channel_layer().group_send)(group_name(topic), message)


def _student_topic(org: Any, student_id: Any, event_type: str) -> str:
    build = rankings_topic if event_type in ("ranking_update", "achievement_earned") else tasks_topic
    return build(org, student_id)


def _individual_target(sender: User, target_id: str, event_type: str) -> Target:
    user = User.objects.filter(pk=target_id, organization_id=sender.organization_id, is_active=True).first()
    if user is None:
        raise Invalid("unknown_target", f"No user {target_id} in your organization.", details=[target_id])
    org = sender.organization_id
    if user.role == Role.STUDENT:
        student = Student.objects.filter(user_id=user.pk).first()
        if student is None:
            raise Invalid("target_has_no_topic", f"User {target_id} has no student record.")
        if not selectors.user_may_watch_student(sender, student.pk):
            raise Forbidden("forbidden_target", f"You do not teach student user {target_id}.")
        return Target(topics=(_student_topic(org, student.pk, event_type),), user=user)
    if user.role == Role.TEACHER:
        teacher = Teacher.objects.filter(user_id=user.pk, deleted_at__isnull=True).first()
        if teacher is None:
            raise Invalid("target_has_no_topic", f"User {target_id} has no teacher record.")
        return Target(topics=(groups_topic(org, teacher.pk),), user=user)
    raise Invalid(
        "target_has_no_topic",
        f"User {target_id} is a {user.role}; individual broadcasts reach students and teachers. "
        "Use targetScope organization for role-wide messages.",
    )


def _group_target(sender: User, target_id: str, event_type: str) -> Target:
    group = Group.objects.filter(pk=target_id, organization_id=sender.organization_id).first()
    if group is None:
        raise Invalid("unknown_target", f"No group {target_id} in your organization.", details=[target_id])
    if not selectors.user_may_watch_group(sender, group.pk):
        raise Forbidden("forbidden_target", f"You are not assigned to group {target_id}.")
    org = sender.organization_id
    students = StudentGroupEnrollment.objects.filter(
        group_id=group.pk, status=StudentGroupEnrollment.Status.ACTIVE
    ).values_list("student_id", flat=True)
    topics = [attendance_topic(org, group.pk)]
    topics += [_student_topic(org, s, event_type) for s in sorted(str(s) for s in students)]
    return Target(topics=tuple(topics), group=group)


def _targets(sender: User, scope: str, target_ids: list[str], event_type: str) -> list[Target]:
    org = str(sender.organization_id)
    if scope == "organization":
        if sender.role != Role.ADMIN:
            raise Forbidden("forbidden_scope", "Only admins broadcast to the whole organization.")
        if any(str(t) != org for t in target_ids):
            raise Invalid("unknown_target", "Organization broadcasts target your own organization only.")
        return [Target(topics=(notifications_topic(org, "all"),))]
    if not target_ids:
        raise Invalid("missing_targets", f"targetScope {scope} needs targetIds.")
    for target_id in target_ids:
        try:
            uuid.UUID(str(target_id))
        except ValueError:
            raise Invalid("unknown_target", f"{target_id!r} is not an id.", details=[target_id]) from None
    build = _individual_target if scope == "individual" else _group_target
    return [build(sender, str(t), event_type) for t in dict.fromkeys(target_ids)]


def _push_recipient_ids(sender: User, target: Target, *, include_family: bool) -> list[str]:
    """The users a broadcast's push goes to: its user, a group's students, or the whole school."""
    if target.user is not None:
        users = [target.user]
    elif target.group is not None:
        student_ids = StudentGroupEnrollment.objects.filter(
            group_id=target.group.pk, status=StudentGroupEnrollment.Status.ACTIVE
        ).values_list("student_id", flat=True)
        users = list(User.objects.filter(student__pk__in=list(student_ids), is_active=True))
    else:
        return [
            str(pk)
            for pk in User.objects.filter(organization_id=sender.organization_id, is_active=True)
            .exclude(pk=sender.pk)
            .values_list("pk", flat=True)
        ]
    ids = [str(u.pk) for u in users]
    if include_family:
        for student in Student.objects.filter(user_id__in=ids):
            ids += sorted(selectors.family_user_ids_of_student(student))
    return list(dict.fromkeys(ids))


def _push_for_broadcast(
    sender: User, event: RealtimeEvent, target: Target, *, event_type: str, payload: dict, cultural: dict
) -> None:
    push_notification_send(
        sender=sender,
        target_user_ids=_push_recipient_ids(
            sender, target, include_family=bool(cultural.get("familyNotificationRequired"))
        ),
        notification_type=PUSH_TYPES[event_type],
        title=payload["title"],
        body=payload["content"],
        priority=EVENT_PRIORITY_TO_PUSH[event.priority],
        scheduled_for=event.scheduled_for,
        expires_at=event.expires_at,
        prayer_time_aware=bool(cultural.get("prayerTimeAware", True)),
        realtime_event=event,
    )


@transaction.atomic
def broadcast_event_create(
    *,
    sender: User,
    event_type: str,
    target_scope: str,
    target_ids: list[str],
    payload: dict[str, Any],
    priority: str = "medium",
    methods: list[str] | None = None,
    scheduled_for: datetime | None = None,
    expires_at: datetime | None = None,
    cultural: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> list[RealtimeEvent]:
    """Store one realtime_events row per target (a BroadcastEventRequest), then fan out on commit.

    Runs in the sender's tenant context; teachers reach the students and groups they teach,
    admins anyone in their organization. A future `scheduled_for`, or the end of the school's
    prayer window for a non-critical event sent during it, is stored for the listener to deliver
    when it falls due.
    """
    now = now or timezone.now()
    _check_broadcast(
        sender=sender, event_type=event_type, target_scope=target_scope, payload=payload, expires_at=expires_at, now=now
    )
    if scheduled_for is None or scheduled_for <= now:
        # Sent now unless the school is at prayer; then the listener sends it when the window ends.
        scheduled_for = prayer_release_at(
            organization=sender.organization,
            priority=priority,
            kind=EVENT_TYPES[event_type][0],
            cultural=cultural,
            at=now,
        )
    events: list[RealtimeEvent] = []
    for target in _targets(sender, target_scope, target_ids, event_type):
        event = _broadcast_stored(
            sender=sender,
            target=target,
            event_type=event_type,
            target_scope=target_scope,
            payload=payload,
            priority=priority,
            methods=methods or ["websocket"],
            cultural=cultural or {},
            scheduled_for=scheduled_for,
            expires_at=expires_at,
            now=now,
        )
        events.append(event)
        if "push_notification" in (methods or []):
            _push_for_broadcast(sender, event, target, event_type=event_type, payload=payload, cultural=cultural or {})
        if scheduled_for is None:
            _fan_out_on_commit(event, target, event_type)
    return events


def _fan_out_on_commit(event: RealtimeEvent, target: Target, event_type: str) -> None:
    for topic in target.topics:
        message = {"topic": topic, "event": event_type, "payload": event.event_payload, "meta": {"id": event.seq}}
        transaction.on_commit(lambda m=message: fan_out(**m))


def _check_broadcast(
    *,
    sender: User,
    event_type: str,
    target_scope: str,
    payload: dict[str, Any],
    expires_at: datetime | None,
    now: datetime,
) -> None:
    if sender.role not in (Role.TEACHER, Role.ADMIN):
        raise Forbidden("forbidden_role", "Only teachers and admins broadcast events.")
    if event_type not in EVENT_TYPES:
        raise Invalid("unknown_event_type", f"Unknown eventType {event_type!r}.")
    if target_scope not in SCOPES:
        raise Invalid("unknown_scope", f"Unknown targetScope {target_scope!r}.")
    if expires_at is not None and expires_at <= now:
        raise Invalid("already_expired", "expiresAt is in the past.")
    if payload_size(payload) > max_payload_bytes():
        raise Invalid("payload_size_exceeded", f"The payload exceeds {max_payload_bytes()} bytes.")


def _broadcast_stored(
    *,
    sender: User,
    target: Target,
    event_type: str,
    target_scope: str,
    payload: dict[str, Any],
    priority: str,
    methods: list[str],
    cultural: dict[str, Any],
    scheduled_for: datetime | None,
    expires_at: datetime | None,
    now: datetime,
) -> RealtimeEvent:
    """The target's outbox row; sent now (`scheduled_for` None) it is stored as already fanned out."""
    stored_type, category = EVENT_TYPES[event_type]
    deliver_now = scheduled_for is None
    event = RealtimeEvent.objects.create(
        organization_id=sender.organization_id,
        event_type=stored_type,
        event_category=category,
        priority=priority,
        event_payload={**payload, "eventType": event_type, "targetScope": target_scope},
        event_metadata={"topics": list(target.topics), "event": event_type, "source": "broadcast_api"},
        target_user=target.user,
        target_user_type=target.user.role if target.user else None,
        target_group=target.group,
        broadcast_scope=target_scope,
        delivery_method=sorted({DELIVERY_METHODS[m] for m in methods}),
        cultural_context=cultural,
        scheduled_for=scheduled_for or now,
        expires_at=expires_at,
        fanout_at=now if deliver_now else None,
        processed_at=now if deliver_now else None,
        delivery_status="sent" if deliver_now else "pending",
        created_by=sender,
    )
    event.refresh_from_db(fields=["seq"])
    return event


def client_broadcast_send(*, sender: User, messages: list[dict[str, Any]]) -> int:
    """The supabase-js REST fallback: client broadcasts to topics the sender may join and may
    broadcast on (events/broadcast_policy.py), never under a server event name.

    Nothing is stored (socket broadcasts are not either); all messages are checked before any is
    sent, each relayed with the sender's `meta.sender`. Runs in the sender's tenant context.
    """
    checked = []
    for index, message in enumerate(messages):
        try:
            topic = authorize_topic(sender, message["topic"])
        except TopicDenied as denied:
            raise Forbidden("forbidden_topic", denied.reason, details={"index": index}) from None
        try:
            broadcast_check(role=sender.role, topic=topic, event=message["event"])
        except BroadcastRefused as refused:
            raise Forbidden(refused.code, refused.reason, details={"index": index}) from None
        if payload_size(message.get("payload")) > max_payload_bytes():
            raise TooLarge("payload_size_exceeded", f"Message {index} exceeds {max_payload_bytes()} bytes.")
        relayed = client_broadcast_message(
            topic=topic.name,
            event=message["event"],
            payload=message.get("payload"),
            user_id=sender.pk,
            role=sender.role,
            sender=None,
        )
        checked.append(relayed)
    for relayed in checked:
        transaction.on_commit(
            lambda m=relayed: async_to_sync(get_channel_layer().group_send)(group_name(m["topic"]), m)
        )
    return len(checked)
