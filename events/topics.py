"""Realtime topic names (the spec's channel patterns) and who may join them.

A topic names its school and subject: `rankings:org_{org}:student_{id}`, `tasks:org_{org}:student_{id}`,
`attendance:org_{org}:group_{id}`, `groups:org_{org}:teacher_{id}`,
`notifications:org_{org}:role_{role|all}`. Authorization reads relations under the user's
tenant context, so another school's subjects do not even exist for the check.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from harry_realtime.errors import Forbidden
from school import selectors
from school.models import Role, User

audit = logging.getLogger("harry.audit")

# Canonical ids only (lowercase, hyphenated), and the whole name must match (fullmatch: `$` would
# also accept a trailing newline): one subject has exactly one topic name, so no alias of a topic
# can be joined past the checks that compare names.
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PATTERNS = {
    "rankings": re.compile(rf"rankings:org_(?P<org>{_UUID}):student_(?P<subject>{_UUID})"),
    "tasks": re.compile(rf"tasks:org_(?P<org>{_UUID}):student_(?P<subject>{_UUID})"),
    "attendance": re.compile(rf"attendance:org_(?P<org>{_UUID}):group_(?P<subject>{_UUID})"),
    "groups": re.compile(rf"groups:org_(?P<org>{_UUID}):teacher_(?P<subject>{_UUID})"),
    "notifications": re.compile(
        rf"notifications:org_(?P<org>{_UUID}):role_(?P<subject>student|teacher|admin|parent|all)"
    ),
}
ROLE_TOPIC_VALUES = ("student", "teacher", "admin", "parent", "all")


# Builders, one per pattern above (events/tests/test_topics.py checks each against its pattern).
def rankings_topic(organization_id: Any, student_id: Any) -> str:
    return f"rankings:org_{organization_id}:student_{student_id}"


def tasks_topic(organization_id: Any, student_id: Any) -> str:
    return f"tasks:org_{organization_id}:student_{student_id}"


def attendance_topic(organization_id: Any, group_id: Any) -> str:
    return f"attendance:org_{organization_id}:group_{group_id}"


def groups_topic(organization_id: Any, teacher_id: Any) -> str:
    return f"groups:org_{organization_id}:teacher_{teacher_id}"


def notifications_topic(organization_id: Any, role: str) -> str:
    """`role` is a user role or `all` (everyone in the school)."""
    return f"notifications:org_{organization_id}:role_{role}"


class TopicDenied(Forbidden):
    """The user may not join; `reason` ("Unauthorized: …") is the join's protocol error reply."""

    def __init__(self, reason: str):
        super().__init__("topic_denied", reason)

    @property
    def reason(self) -> str:
        return self.message


@dataclass(frozen=True)
class Topic:
    name: str
    kind: str
    organization_id: str
    subject: str


def parse_topic(name: str) -> Topic:
    kind = name.split(":", 1)[0]
    pattern = PATTERNS.get(kind)
    match = pattern.fullmatch(name) if pattern else None
    if match is None:
        raise TopicDenied(f"Unauthorized: unknown topic pattern {name!r}")
    return Topic(name=name, kind=kind, organization_id=match["org"], subject=match["subject"])


def _may_join(user: User, topic: Topic) -> bool:
    if topic.kind in ("rankings", "tasks"):
        return selectors.user_may_watch_student(user, topic.subject)
    if topic.kind == "attendance":
        return selectors.user_may_watch_group(user, topic.subject)
    if topic.kind == "groups":
        return selectors.user_may_watch_teacher(user, topic.subject)
    return topic.subject in ("all", user.role)


def authorize_topic(user: User, name: str) -> Topic:
    """The parsed topic if `user` may join it; TopicDenied (and an audit line) otherwise.

    Must run inside the user's tenant context.
    """
    try:
        topic = parse_topic(name)
        if topic.organization_id != str(user.organization_id):
            raise TopicDenied("Unauthorized: the topic belongs to another organization")
        if not _may_join(user, topic):
            raise TopicDenied(f"Unauthorized: no access to {topic.kind} of this subject")
    except TopicDenied as denied:
        audit.warning(
            "topic_denied user=%s org=%s role=%s topic=%r reason=%s",
            user.pk,
            user.organization_id,
            user.role,
            name,
            denied.reason,
        )
        raise
    return topic


def may_read_topic(user: User, name: str) -> bool:
    """Whether `user` may read the messages of topic `name`: the join rule of `authorize_topic`
    (without its audit line), for the paths that read a topic's messages without joining it (the
    poll). One rule decides a topic's readers on every path. Must run inside the user's tenant
    context."""
    try:
        topic = parse_topic(name)
    except TopicDenied:
        return False
    return topic.organization_id == str(user.organization_id) and _may_join(user, topic)


class TopicReaders:
    """`may_read_topic` for one user, each topic decided once (one poll page names few topics)."""

    def __init__(self, user: User):
        self.user = user
        self._decided: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        if name not in self._decided:
            self._decided[name] = may_read_topic(self.user, name)
        return self._decided[name]


def topics_for_user(user: User) -> list[str]:
    """Every topic this user may and should join, from their role and relations."""
    org = user.organization_id
    topics = [notifications_topic(org, "all"), notifications_topic(org, user.role)]
    if user.role == Role.STUDENT:
        student = selectors.student_for_user(user)
        students = [student] if student else []
    elif user.role == Role.PARENT:
        students = selectors.children_of(user)
    else:
        students = []
    for student in students:
        topics += [rankings_topic(org, student.pk), tasks_topic(org, student.pk)]
    if user.role == Role.TEACHER:
        teacher = selectors.teacher_for_user(user)
        if teacher:
            topics.append(groups_topic(org, teacher.pk))
            topics += [attendance_topic(org, g) for g in sorted(selectors.active_group_ids_of_teacher(teacher.pk))]
    if user.role == Role.ADMIN:
        topics += [attendance_topic(org, g.pk) for g in selectors.groups_of_user(user)]
    return topics


def group_name(topic: str) -> str:
    """The channel-layer group for a topic (group names may not contain ':', max 99 chars)."""
    name = "topic." + topic.replace(":", ".")
    if len(name) > 99:
        name = "topic.h." + hashlib.sha256(topic.encode()).hexdigest()
    return name
