"""What one socket delivered of a topic's stored events: each at most once, in `seq` order.

Stored events reach a socket at least once, not exactly once: the listener sends a batch again
when it failed between the channel-layer send and marking the batch processed (a crash, a
killed database connection, a Redis restart), the channel layer hands over again what it had in
flight when Redis went away, and join-time replay overlaps live delivery. So every socket keeps,
per topic and kind of frame (`broadcast`, `postgres_changes`: one event may make one of each, with
the same `meta.id`), a high-water mark, the highest seq it delivered, and the seqs of its last
`WINDOW` deliveries. A seq it delivered is dropped, however it comes back (live, replayed, caught
up, inside a listener batch or a socket batch); a seq above the mark is delivered and raises it.

A seq below the mark that this socket never delivered is delivered late rather than dropped:
`seq` is taken at insert, and some events rightly come after a higher one — a transaction that
committed after a later one (docs/design.md, decision 1), a scheduled or prayer-held event falling
due, an event held back for a poor connection and caught up. Dropping them would lose them; the
client orders by `meta.id` if it must. Repeats come within far fewer deliveries than `WINDOW`
(a listener batch is at most 500 events, a channel-layer take 200), so a repeat is always
recognized.

Memory: one machine integer per remembered delivery (an `array`), at most `WINDOW` (+25%) per
topic and kind, only for topics that carried that many events.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort

# Deliveries remembered per topic and kind: above the largest span between an event's first
# delivery and its repeat (a listener batch of 500, a replay's seam).
WINDOW = 2048


class DeliveredSeqs:
    """The delivered seqs of one topic and kind on one socket."""

    __slots__ = ("high", "_recent")

    def __init__(self) -> None:
        self.high = 0
        self._recent = array("q")  # ascending

    def seen(self, seq: int) -> bool:
        """Whether this seq was delivered already (then it must be dropped)."""
        if seq > self.high:
            return False
        recent = self._recent
        index = bisect_left(recent, seq)
        return index < len(recent) and recent[index] == seq

    def add(self, seq: int) -> None:
        """Remember a delivered seq."""
        if seq > self.high:
            self.high = seq
            self._recent.append(seq)
        elif not self.seen(seq):
            insort(self._recent, seq)
        if len(self._recent) > WINDOW + WINDOW // 4:
            del self._recent[: len(self._recent) - WINDOW]

    def __len__(self) -> int:
        return len(self._recent)
