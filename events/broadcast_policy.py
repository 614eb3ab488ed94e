"""Client broadcasts: which event names and topics a client may broadcast on, and who it says it is.

A client broadcast is a socket `broadcast` on a joined channel or the REST fallback
(`POST /realtime/v1/api/broadcast`, `/realtime/v1/api/broadcast/{topic}/events/{event}`). Three
rules, all here, applied by both paths before anything is relayed:

1. **Reserved names.** A name the server broadcasts under (`events.messages.SERVER_EVENTS`: every
   domain event, notice, announcement, alert, reminder, marking notice, batch...) is refused, so
   whatever arrives under such a name was made by the server. realtime-js matches broadcast names
   without regard to case, so the comparison ignores case too (and compatibility forms).
2. **Who may broadcast where** (`BROADCASTERS`, below), on top of who may join the topic
   (`events.topics.authorize_topic`): only staff broadcast, and only admins to a whole school's
   or a whole role's audience.
3. **Sender.** A relayed broadcast carries `meta.sender = {user_id, role}` from the server's
   record of the sender (`events.messages.client_broadcast_message`); whatever the client sent as
   meta is dropped.

| topic | may broadcast (among those who may join it) |
|---|---|
| `rankings:…:student_{id}`, `tasks:…:student_{id}` | teachers, admins |
| `attendance:…:group_{id}` | teachers, admins |
| `groups:…:teacher_{id}` | teachers (that teacher), admins |
| `notifications:…:role_teacher` | teachers, admins |
| `notifications:…:role_admin`, `role_student`, `role_parent`, `role_all` | admins |

Students and parents broadcast nowhere: what they send reaches others through the API (offline
sync, presence), where it is validated as data.
"""

from __future__ import annotations

import unicodedata

from events.messages import SERVER_EVENTS
from events.topics import Topic
from harry_realtime.errors import Forbidden
from school.models import Role

STAFF = frozenset({Role.TEACHER, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})

# Topic kind, or `notifications:role_<x>` for a role topic -> the roles that may broadcast on it.
BROADCASTERS: dict[str, frozenset[str]] = {
    "rankings": STAFF,
    "tasks": STAFF,
    "attendance": STAFF,
    "groups": STAFF,
    "notifications:role_teacher": STAFF,
    "notifications:role_admin": ADMINS,
    "notifications:role_student": ADMINS,
    "notifications:role_parent": ADMINS,
    "notifications:role_all": ADMINS,
}


class BroadcastRefused(Forbidden):
    """A client broadcast that may not be relayed; `reason` is the socket's protocol error reason."""

    def __init__(self, code: str, reason: str):
        super().__init__(code, reason)

    @property
    def reason(self) -> str:
        return self.message


def _forms(name: str) -> set[str]:
    return {name.lower(), unicodedata.normalize("NFKC", name).casefold()}


_RESERVED = frozenset(form for name in SERVER_EVENTS for form in _forms(name))


def is_reserved(event: str) -> bool:
    """Whether `event` is (or a client would match it as) a name the server broadcasts under."""
    return bool(_forms(event) & _RESERVED)


def rule_key(topic: Topic) -> str:
    return f"notifications:role_{topic.subject}" if topic.kind == "notifications" else topic.kind


def broadcast_check(*, role: str, topic: Topic, event: str) -> None:
    """BroadcastRefused unless a user of `role`, already allowed to join `topic`, may broadcast
    `event` on it."""
    if is_reserved(event):
        raise BroadcastRefused(
            "reserved_event",
            f"ReservedEvent: {event!r} is an event name the server sends; clients may not broadcast it",
        )
    if role not in BROADCASTERS.get(rule_key(topic), frozenset()):
        raise BroadcastRefused(
            "broadcast_forbidden", f"Unauthorized: a {role} may not broadcast on {topic.kind} topic {topic.name!r}"
        )
