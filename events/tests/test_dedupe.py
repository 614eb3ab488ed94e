"""Each stored event at most once and in seq order per socket and topic, whatever the listener
does: a batch sent again after a crash, an old batch arriving after newer ones, the replay seam,
socket batches (events/dedupe.py)."""

from collections import defaultdict

import pytest
from asgiref.sync import sync_to_async

from events import dedupe
from events.dedupe import DeliveredSeqs
from events.listener import Listener, _load_batch
from events.tests.test_pipeline_delivery import _backlog_done, attendance_topic, binding, pg_join, set_attendance
from harry_realtime.testing import Socket, token

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]

STATUSES = ["late", "present", "absent"]


def test_delivered_seqs_drop_what_was_delivered_and_let_a_late_first_delivery_through():
    marks = DeliveredSeqs()
    for seq in (10, 11, 15):
        assert not marks.seen(seq)
        marks.add(seq)
    assert marks.high == 15
    assert all(marks.seen(seq) for seq in (10, 11, 15))
    assert not marks.seen(12) and not marks.seen(16)  # never delivered: below the mark, and above
    marks.add(12)  # a late commit, delivered late
    assert marks.seen(12) and marks.high == 15
    marks.add(12)
    assert len(marks) == 4


def test_delivered_seqs_stay_bounded():
    marks = DeliveredSeqs()
    for seq in range(1, dedupe.WINDOW * 3):
        marks.add(seq)
    assert dedupe.WINDOW <= len(marks) <= dedupe.WINDOW + dedupe.WINDOW // 4
    assert marks.seen(dedupe.WINDOW * 3 - 1) and marks.seen(dedupe.WINDOW * 2)


def _stored_batch() -> list[tuple[str, dict]]:
    """The listener's messages for every unprocessed event, as it builds them (not marked)."""
    _, messages, _ = _load_batch(500)
    return messages


async def written(school, count: int) -> dict[int, list[tuple[str, dict]]]:
    """`count` attendance changes, stored and loaded by the listener (marked fanned out, not
    processed): its messages per seq."""
    await sync_to_async(_backlog_done)()
    for i in range(count):
        await sync_to_async(set_attendance)(school, STATUSES[i % 3])
    return await loaded()


async def loaded() -> dict[int, list[tuple[str, dict]]]:
    """The listener's messages per seq for every unprocessed event, as it loads them."""
    by_seq: dict[int, list[tuple[str, dict]]] = defaultdict(list)
    for topic, message in await sync_to_async(_stored_batch)():
        by_seq[message["meta"]["id"]].append((topic, message))
    return dict(sorted(by_seq.items()))


async def send(seqs: list[int], stored: dict[int, list[tuple[str, dict]]]) -> None:
    """One listener batch of these events, through the listener's own send."""
    await Listener()._send([item for seq in seqs for item in stored[seq]])


async def frames(socket: Socket, topic: str) -> list[tuple[str, int]]:
    """(event, meta.id) of every stored-event frame until the socket falls silent; a socket batch
    counts as its items."""
    seen = []
    while not await socket.no_message(0.5):
        message = await socket.recv()
        if message.topic != topic or message.event not in ("broadcast", "postgres_changes"):
            continue
        if message.event == "postgres_changes":
            seen.append(("postgres_changes", message.payload["meta"]["id"]))
        elif message.payload["event"] == "batch":
            seen += [("broadcast", item["meta"]["id"]) for item in message.payload["payload"]["events"]]
        else:
            seen.append(("broadcast", message.payload["meta"]["id"]))
    return seen


def in_order(seqs: list[int]) -> list[tuple[str, int]]:
    return [(kind, seq) for seq in seqs for kind in ("broadcast", "postgres_changes")]


async def test_a_batch_sent_again_and_an_old_batch_after_newer_ones_are_delivered_once_in_order(schools):
    a = schools.a
    topic = attendance_topic(a)
    socket, _ = await pg_join(a.teacher_user, topic, [binding("attendance")])
    stored = await written(a, 6)
    seqs = list(stored)
    first, second = seqs[:4], seqs[4:]

    await send(first, stored)
    await send(first, stored)  # the listener crashed before marking the batch: sent again
    await send(second, stored)
    await send(first, stored)  # an old batch after a newer one (a standby re-sending it)
    await send(seqs[::-1], stored)  # and every event again, newest first

    assert await frames(socket, topic) == in_order(seqs)
    await socket.close()


async def test_socket_batches_carry_each_event_once(schools):
    a = schools.a
    topic = attendance_topic(a)
    socket, _ = await pg_join(a.teacher_user, topic, [], batch={"max_events": 3, "window_ms": 100})
    stored = await written(a, 7)
    seqs = list(stored)

    await send(seqs[:5], stored)
    await send(seqs[:5], stored)
    await send(seqs[3:], stored)

    received = await frames(socket, topic)
    assert received == [("broadcast", seq) for seq in seqs]
    await socket.close()


async def test_replayed_events_sent_again_live_are_dropped(schools):
    a = schools.a
    topic = attendance_topic(a)
    stored = await written(a, 4)
    seqs = list(stored)
    socket, _ = await pg_join(a.teacher_user, topic, [binding("attendance")], replay={"after_id": seqs[0] - 1})
    replayed = await frames(socket, topic)
    assert replayed == in_order(seqs)

    await send(seqs, stored)  # the same events live, as after a listener crash
    assert await frames(socket, topic) == []
    await socket.close()


async def test_an_event_first_seen_below_the_mark_is_delivered_late_not_lost(schools):
    """A transaction that committed after a later one: its event comes after a higher seq. It was
    never delivered, so it is delivered, once."""
    a = schools.a
    topic = attendance_topic(a)
    socket, _ = await pg_join(a.teacher_user, topic, [binding("attendance")])
    stored = await written(a, 3)
    early, late, last = stored

    await send([late], stored)
    await send([early], stored)
    await send([early, late, last], stored)

    assert await frames(socket, topic) == in_order([late, early, last])
    await socket.close()


async def test_a_rejoin_on_the_same_socket_gets_nothing_twice(schools):
    a = schools.a
    topic = attendance_topic(a)
    socket, _ = await pg_join(a.teacher_user, topic, [binding("attendance")])
    stored = await written(a, 3)
    seqs = list(stored)
    await send(seqs[:2], stored)
    assert await frames(socket, topic) == in_order(seqs[:2])

    # realtime-js joins again after a channel error, on the same socket, asking for a replay.
    config = {
        "broadcast": {"ack": False, "self": False, "replay": {"after_id": seqs[0] - 1}},
        "postgres_changes": [binding("attendance")],
    }
    reply = await socket.join(topic, token(a.teacher_user), config)
    assert reply.payload["status"] == "ok"
    assert await frames(socket, topic) == in_order(seqs[2:])  # the replay skips what it had
    await send(seqs, stored)
    assert await frames(socket, topic) == []
    await socket.close()


async def test_an_event_not_yet_fanned_out_is_not_replayed_so_the_clients_next_socket_gets_it_once(schools):
    """Replay reads only what the listener fanned out; the rest reaches the joined socket live. A
    replay ahead of the listener reached the client, whose next socket (rejoining after the last id
    it saw) then got the same events live again: duplicates after a Redis pause in `make test-faults`."""
    a = schools.a
    topic = attendance_topic(a)
    before = max(await written(a, 1))  # fanned out (and processed) before the socket joins
    await sync_to_async(_backlog_done)()
    for status in STATUSES:  # stored while the listener is held up
        await sync_to_async(set_attendance)(a, status)

    first, _ = await pg_join(a.teacher_user, topic, [binding("attendance")], replay={"after_id": before - 1})
    seen_first = await frames(first, topic)
    assert seen_first == in_order([before])
    await first.close()  # realtime-js drops the socket and reconnects
    after_id = max(seq for _, seq in seen_first)
    second, _ = await pg_join(a.teacher_user, topic, [binding("attendance")], replay={"after_id": after_id})
    stored = await loaded()  # the listener catches up: loads and sends the three
    await send(list(stored), stored)

    assert len(stored) == 3
    assert seen_first + await frames(second, topic) == in_order([before, *stored])
    await second.close()


async def test_an_event_sent_before_the_join_but_not_yet_marked_processed_is_replayed(schools):
    """The listener marks a batch processed after the send: a socket joining in between missed it
    live, so replay must not wait for the processed mark."""
    a = schools.a
    topic = attendance_topic(a)
    stored = await written(a, 3)
    seqs = list(stored)
    await send(seqs, stored)  # to nobody: no socket has joined yet

    socket, _ = await pg_join(a.teacher_user, topic, [binding("attendance")], replay={"after_id": seqs[0] - 1})
    assert await frames(socket, topic) == in_order(seqs)
    await socket.close()
