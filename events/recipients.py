"""Per-recipient filtering: what one socket's user may see of a channel-layer message.

The consumer turns each message into a socket frame for one recipient with
`broadcast_for_recipient` / `postgres_change_for_recipient`, which apply the row rules
(audience, target user) and FERPA (`ferpa.py`); the poll uses the same functions
(`change_data_for_recipient` for a change without bindings). That the recipient may read the
topic at all is the caller's check (the join, or `events.topics.may_read_topic`).
"""

from __future__ import annotations

from typing import Any

from events import ferpa
from events.bindings import Binding

# The access level of a broadcast that carries no audience: not about a student, sent as stored.
UNFILTERED = "unfiltered"


def broadcast_access(message: dict, *, user_id: Any, role: str) -> str | None:
    """The FERPA access level at which this user gets the broadcast, or None when it is not theirs."""
    audience = message.get("audience")
    if not ferpa.may_receive(user_id, role, audience, message["payload"]):
        return None
    return ferpa.access_level(user_id, audience, role=role) if audience else UNFILTERED


def broadcast_body(message: dict, level: str) -> dict:
    """The socket payload `{type:'broadcast', event, payload, meta}` at an access level."""
    payload = message["payload"] if level == UNFILTERED else ferpa.filter_payload(message["payload"], level)
    return {"type": "broadcast", "event": message["event"], "payload": payload, "meta": message["meta"]}


def broadcast_for_recipient(message: dict, *, user_id: Any, role: str) -> dict | None:
    """The socket payload for one user, or None."""
    level = broadcast_access(message, user_id=user_id, role=role)
    return None if level is None else broadcast_body(message, level)


def change_access(message: dict, *, user_id: Any, role: str, organization_id: Any) -> str | None:
    """The FERPA access level at which this user gets a captured change, or None when the row is
    not theirs to see (another school, a notification for someone else)."""
    if str(message["organization_id"]) != str(organization_id):
        return None
    data = message["data"]
    if not ferpa.may_receive(user_id, role, message.get("audience"), data["record"] or data["old_record"]):
        return None
    return ferpa.access_level(user_id, message.get("audience"), role=role)


def change_data_for_recipient(message: dict, *, user_id: Any, role: str, organization_id: Any) -> dict | None:
    """A change's `data` as filtered for one user (no bindings: the poll), or None."""
    level = change_access(message, user_id=user_id, role=role, organization_id=organization_id)
    return None if level is None else ferpa.filter_change(message["data"], level)


def postgres_change_access(
    message: dict, *, user_id: Any, role: str, organization_id: Any, bindings: list[Binding]
) -> tuple[list[int], str] | None:
    """(ids of the join's matching bindings, FERPA access level), or None when no binding matches
    or the row is not theirs to see. Bindings filter on the new row, or the old one for DELETE."""
    level = change_access(message, user_id=user_id, role=role, organization_id=organization_id)
    if level is None:
        return None
    data = message["data"]
    row = data["old_record"] if data["type"] == "DELETE" else data["record"]
    ids = [b.id for b in bindings if b.matches(table=data["table"], change_type=data["type"], record=row)]
    if not ids:
        return None
    return ids, level


def postgres_change_body(message: dict, ids: list[int], data: dict) -> dict:
    """The socket payload `{ids, data, meta}`, with `data` as filtered for the recipient."""
    return {"ids": ids, "data": data, "meta": message["meta"]}


def postgres_change_for_recipient(
    message: dict, *, user_id: Any, role: str, organization_id: Any, bindings: list[Binding]
) -> dict | None:
    """The socket payload for one user's join, or None."""
    access = postgres_change_access(
        message, user_id=user_id, role=role, organization_id=organization_id, bindings=bindings
    )
    if access is None:
        return None
    ids, level = access
    return postgres_change_body(message, ids, ferpa.filter_change(message["data"], level))
