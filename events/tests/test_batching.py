"""Batching rules from the join config, and the per-channel Batcher's flush triggers."""

import asyncio

import pytest

from events import batching
from events.batching import BatchConfigError, Batcher, BatchRule


def config(batch) -> dict:
    return {"broadcast": {"ack": False, "batch": batch}}


def test_rules_come_from_the_topic_kind_unless_the_join_sets_its_own(settings):
    assert batching.batch_rule({}, "rankings:org_1:student_2") is None
    assert batching.batch_rule(config(False), "rankings:org_1:student_2") is None
    assert batching.batch_rule(config(True), "rankings:org_1:student_2") == BatchRule(10, 2000)
    assert batching.batch_rule(config(True), "attendance:org_1:group_2") == BatchRule(50, 1000)
    assert batching.batch_rule(config(True), "tasks:org_1:student_2") == BatchRule(20, 5000)
    assert batching.batch_rule(config({"window_ms": 300}), "tasks:org_1:student_2") == BatchRule(20, 300)
    settings.REALTIME_BATCH_RULES = "rankings=3/100"
    assert batching.batch_rule(config(True), "rankings:org_1:student_2") == BatchRule(3, 100)


@pytest.mark.parametrize(
    ("batch", "topic", "needle"),
    [
        (True, "notifications:org_1:role_all", "no batching rule"),
        ("yes", "rankings:org_1:student_2", "true or {max_events, window_ms}"),
        ({"max_events": 0}, "rankings:org_1:student_2", "max_events"),
        ({"window_ms": 60_000}, "rankings:org_1:student_2", "window_ms"),
        ({"max_events": True}, "rankings:org_1:student_2", "max_events"),
    ],
)
def test_malformed_batch_config_is_refused(batch, topic, needle):
    with pytest.raises(BatchConfigError) as refused:
        batching.batch_rule(config(batch), topic)
    assert refused.value.reason.startswith("InvalidBatch:") and needle in refused.value.reason


def body(seq: int) -> dict:
    return {"type": "broadcast", "event": "ranking_update", "payload": {"n": seq}, "meta": {"id": seq}}


def test_batch_body_lists_events_with_their_ids():
    out = batching.batch_body([body(1), body(2)])
    assert out["event"] == "batch" and out["meta"] == {"ids": [1, 2]}
    assert out["payload"]["events"][1] == {"event": "ranking_update", "payload": {"n": 2}, "meta": {"id": 2}}


class Sink:
    def __init__(self):
        self.batches: list[list[int]] = []

    async def __call__(self, items: list[dict]) -> None:
        self.batches.append([i["meta"]["id"] for i in items])


async def test_batcher_flushes_when_full_after_the_window_and_at_once_for_urgent_events():
    sink = Sink()
    batcher = Batcher(BatchRule(max_events=3, window_ms=200), sink)
    for seq in (1, 2, 3):
        await batcher.add(body(seq))
    assert sink.batches == [[1, 2, 3]]
    await batcher.add(body(4))
    await asyncio.sleep(0.05)
    assert sink.batches == [[1, 2, 3]] and batcher.pending == 1
    await asyncio.sleep(0.3)
    assert sink.batches == [[1, 2, 3], [4]]
    await batcher.add(body(5))
    await batcher.add(body(6), urgent=True)
    assert sink.batches[-1] == [5, 6] and batcher.pending == 0
    await asyncio.sleep(0.3)
    assert len(sink.batches) == 3  # the cancelled timer sent nothing more


async def test_discarded_batcher_sends_nothing():
    sink = Sink()
    batcher = Batcher(BatchRule(max_events=5, window_ms=100), sink)
    await batcher.add(body(1))
    batcher.discard()
    await asyncio.sleep(0.2)
    assert sink.batches == [] and batcher.pending == 0
