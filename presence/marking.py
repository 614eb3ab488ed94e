"""Who is marking which student's attendance right now, shared by every server process (Redis).

Per group there are two keys: a hash `student -> "<user id>|<claim expiry ms>"` and a sorted set of
the teachers (user ids) marking the group, scored by when their marking session lapses. Claim and
release are Lua scripts, so two teachers racing for one student on two servers cannot both win.
A claim lasts the marking window (spec classroomMode.attendanceMarkingTimeout, 5 minutes) from the
teacher's last marking action.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis
from django.conf import settings

from harry_realtime import redis_conn

_CLAIM = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local user = ARGV[3]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], user) then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
    local others = redis.call('ZRANGE', KEYS[2], 0, -1)
    table.insert(others, 1, 'limit')
    return others
  end
end
if ARGV[5] ~= '1' then
  local conflicts = {'conflict'}
  for i = 6, #ARGV do
    local value = redis.call('HGET', KEYS[1], ARGV[i])
    if value then
      local sep = string.find(value, '|', 1, true)
      local owner = string.sub(value, 1, sep - 1)
      local expires = tonumber(string.sub(value, sep + 1))
      if owner ~= user and expires > now then
        table.insert(conflicts, ARGV[i])
        table.insert(conflicts, owner)
        table.insert(conflicts, tostring(expires))
      end
    end
  end
  if #conflicts > 1 then return conflicts end
end
local expires = now + window
for i = 6, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], user .. '|' .. expires)
end
redis.call('ZADD', KEYS[2], expires, user)
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return {'ok', tostring(expires)}
"""

# Releases every claim `user` holds in the group and ends their marking session there.
_RELEASE = """
local user = ARGV[1]
local released = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local value = entries[i + 1]
  if string.sub(value, 1, string.len(user) + 1) == user .. '|' then
    redis.call('HDEL', KEYS[1], entries[i])
    table.insert(released, entries[i])
  end
end
redis.call('ZREM', KEYS[2], user)
return released
"""


@dataclass(frozen=True)
class Conflict:
    student_id: str
    user_id: str
    expires_at_ms: int


@dataclass(frozen=True)
class ClaimResult:
    ok: bool
    expires_at_ms: int | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    # Set when the group already has the maximum number of teachers marking: their user ids.
    limit_reached_by: list[str] | None = None


_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis_conn.sync_client(decode_responses=True)
    return _client


def _keys(group_id: str) -> list[str]:
    base = f"{settings.PRESENCE_REDIS_PREFIX}:attendance_marking:{group_id}"
    return [f"{base}:claims", f"{base}:teachers"]


def now_ms() -> int:
    return int(time.time() * 1000)


def claim(
    *, group_id: str, user_id: str, student_ids: list[str], override: bool = False, at_ms: int | None = None
) -> ClaimResult:
    """Claim students for `user_id` for the marking window, unless another teacher holds them."""
    reply = _redis().eval(
        _CLAIM,
        2,
        *_keys(str(group_id)),
        at_ms if at_ms is not None else now_ms(),
        settings.ATTENDANCE_MARKING_WINDOW_SECONDS * 1000,
        str(user_id),
        settings.ATTENDANCE_MAX_CONCURRENT_MARKERS,
        "1" if override else "0",
        *[str(s) for s in student_ids],
    )
    kind, rest = reply[0], reply[1:]
    if kind == "ok":
        return ClaimResult(ok=True, expires_at_ms=int(rest[0]))
    if kind == "limit":
        return ClaimResult(ok=False, limit_reached_by=list(rest))
    conflicts = [Conflict(rest[i], rest[i + 1], int(rest[i + 2])) for i in range(0, len(rest), 3)]
    return ClaimResult(ok=False, conflicts=conflicts)


def release(*, group_id: str, user_id: str) -> list[str]:
    """End `user_id`'s marking session in the group; the student ids whose claims were released."""
    return list(_redis().eval(_RELEASE, 2, *_keys(str(group_id)), str(user_id)))


def active_markers(*, group_id: str, at_ms: int | None = None) -> dict[str, int]:
    """User ids marking the group now, with when their session lapses (ms)."""
    at = at_ms if at_ms is not None else now_ms()
    rows = _redis().zrangebyscore(_keys(str(group_id))[1], f"({at}", "+inf", withscores=True)
    return {user: int(score) for user, score in rows}
