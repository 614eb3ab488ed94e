"""Uploading a batch of offline operations exactly once.

How an upload is applied (`operations_upload`):

1. One transaction per chunk of `OPERATIONS_PER_TRANSACTION` operations (priority order), in the
   user's `tenant_context`. The first also reads the writer's role and relations once.
2. Claim: one `INSERT ... ON CONFLICT (user_id, device_id, operation_id) DO NOTHING RETURNING` writes the
   chunk's queue rows as `processing`. Only claimed operations are applied. An operation already
   stored, or claimed by a concurrent upload (the INSERT waits for that transaction; ids go in a
   fixed order, so two uploads cannot deadlock), gets its stored outcome as a `duplicate`.
3. Each claimed operation runs under its own SAVEPOINT: a refusal, conflict or database error
   (constraint, lock timeout) rolls back that operation only; the others of the chunk stand. The
   savepoint statements ride along with the operation's first query (`OperationSavepoints`), and
   what the chunk's INSERTs need to know (free record ids, free lesson days) is read in bulk
   first (`Known`). INSERTs that need nothing more are written table by table, one multi-row
   statement each (`_ChunkRun`); a statement that fails is undone and its operations run alone.
4. One UPDATE stores every operation's outcome row, then the chunk commits: each change commits
   together with its outcome row, never one without the other, so exactly-once holds.

Why savepoints and not one transaction per operation (the issue's wording): the isolation of
failures is the same, since a failed operation's savepoint undoes exactly its own writes and its
outcome row still records the failure, while commits (and their WAL flushes) drop from one per
operation to one per chunk. What changes is durability timing: an operation's change is durable
when its chunk commits, not when it finishes. If the server crashes or loses the connection
mid-chunk, the whole chunk rolls back, changes and outcome rows alike, and the device (which got
no response) uploads it again: nothing is lost or applied twice. An unexpected exception in one
operation (a bug) keeps the operations before it: their outcomes are stored and committed, the
claims of the rest are dropped, and the error propagates (HTTP 500), as when each operation
committed on its own. Chunks stay below 64 operations because every savepoint that writes takes
a subtransaction id and PostgreSQL caches only 64 per backend before all sessions' snapshots
overflow to pg_subtrans; a chunk also bounds how long an upload holds its row locks.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, IntegrityError, connection
from django.db.models import Model
from django.utils import timezone

from harry_realtime import jsonutil
from harry_realtime.tenancy import Tenant, tenant_context

from .apply import (
    Actor,
    IncomingOperation,
    Known,
    Outcome,
    actor_read,
    completed_outcome,
    insert_plan,
    integrity_refusal,
    is_transient,
    known_read,
    operation_apply,
    retry_delay,
    set_lock_timeout,
)
from .models import OfflineSyncOperation
from .policy import effective_priority
from .savepoints import OperationSavepoints
from .tables import (
    OperationRefused,
)

# Operations applied per transaction, each under its own savepoint. Each savepoint that writes
# takes a subtransaction id; PostgreSQL caches 64 per backend, beyond which every session's
# snapshots overflow to pg_subtrans (a known slowdown), so stay below it. It also bounds how long
# one upload holds its row locks.
OPERATIONS_PER_TRANSACTION = 50


# ---------------------------------------------------------------------------------------------
# The queue row


_DJANGO_JSON = DjangoJSONEncoder()


def _json(value) -> str | None:
    return None if value is None else jsonutil.dumps(value, default=_DJANGO_JSON.default).decode()


# Written when an operation is claimed, before it is applied: (column, SQL type).
CLAIM_COLUMNS = (
    ("organization_id", "uuid"),
    ("user_id", "uuid"),
    ("device_id", "text"),
    ("operation_id", "text"),
    ("operation_type", "text"),
    ("table_name", "text"),
    ("record_id", "uuid"),
    ("old_data", "jsonb"),
    ("new_data", "jsonb"),
    ("client_sync_version", "bigint"),
    ("offline_data_hash", "text"),
    ("priority", "integer"),
    ("sync_status", "text"),
    ("retry_count", "integer"),
    ("max_retries", "integer"),
    ("conflict_resolution_strategy", "text"),
    ("result", "jsonb"),
    ("cultural_context", "jsonb"),
    ("islamic_calendar_date", "text"),
    ("prayer_time_context", "text"),
    ("local_timestamp", "timestamptz"),
    ("timezone", "text"),
    ("bandwidth_used_bytes", "integer"),
)
# Written with the outcome, in the same transaction.
OUTCOME_COLUMNS = (
    ("record_id", "uuid"),
    ("sync_status", "text"),
    ("next_retry_at", "timestamptz"),
    ("failed_at", "timestamptz"),
    ("completed_at", "timestamptz"),
    ("conflict_detected", "boolean"),
    ("conflict_metadata", "jsonb"),
    ("result", "jsonb"),
    ("operation_duration_ms", "integer"),
    ("error_message", "text"),
)


def _recordset(columns) -> str:
    return ", ".join(f"{c} {t}" for c, t in columns)


# A whole chunk's rows travel as one jsonb parameter: one short, constant statement to parse,
# whatever the chunk size (a JSON null becomes an SQL NULL).
CLAIM_SQL = (
    f"INSERT INTO offline_sync_queue ({', '.join(c for c, _ in CLAIM_COLUMNS)})"
    f" SELECT {', '.join(c for c, _ in CLAIM_COLUMNS)}"
    f" FROM jsonb_to_recordset(%s::jsonb) AS x({_recordset(CLAIM_COLUMNS)}) ORDER BY operation_id"
    " ON CONFLICT (user_id, device_id, operation_id) DO NOTHING RETURNING operation_id"
)
STORE_OUTCOMES_SQL = (
    f"UPDATE offline_sync_queue AS q SET {', '.join(f'{c} = v.{c}' for c, _ in OUTCOME_COLUMNS)}"
    f" FROM jsonb_to_recordset(%s::jsonb) AS v(operation_id text, {_recordset(OUTCOME_COLUMNS)})"
    " WHERE q.user_id = %s AND q.device_id = %s AND q.operation_id = v.operation_id AND q.sync_status = 'processing'"
)


def _claim_row(actor: Actor, device_id: str, op: IncomingOperation) -> dict:
    return {
        "organization_id": actor.tenant.organization_id,
        "user_id": actor.user_id,
        "device_id": device_id,
        "operation_id": op.operation_id,
        "operation_type": op.operation_type,
        "table_name": op.table_name,
        "record_id": op.record_id,
        "old_data": op.old_data,
        "new_data": op.data,
        "client_sync_version": op.client_sync_version,
        "offline_data_hash": op.offline_data_hash,
        "priority": op.priority,
        "sync_status": "processing",
        "retry_count": 0,
        "max_retries": settings.SYNC_MAX_RETRIES,
        "conflict_resolution_strategy": op.strategy,
        "result": {},
        "cultural_context": op.cultural_context,
        "islamic_calendar_date": op.islamic_calendar_date,
        "prayer_time_context": op.prayer_time_context,
        "local_timestamp": _timestamp(op.local_timestamp),
        "timezone": op.timezone,
        "bandwidth_used_bytes": op.size_bytes,
    }


def _timestamp(value: datetime | None) -> str | None:
    """Full precision: DjangoJSONEncoder would cut a timestamp column to milliseconds."""
    return None if value is None else value.isoformat()


def _claim(actor: Actor, device_id: str, ops: list[IncomingOperation]) -> set[str]:
    """Insert the queue rows of `ops` as `processing`; returns the operation ids this call now owns.

    `ON CONFLICT (user_id, device_id, operation_id) DO NOTHING`: an id this user already stored, or
    claimed by a concurrent upload that commits first (this statement waits for it), is not ours
    to apply. The key holds the user (and so the school): the same device and operation ids from
    another user are another operation, never a refusal.
    Rows go in operation-id order, so two uploads claiming overlapping sets wait, never deadlock.
    """
    if not ops:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, [_json([_claim_row(actor, device_id, op) for op in ops])])
        return {row[0] for row in cursor.fetchall()}


def _outcome_values(op: IncomingOperation, outcome: Outcome, started: float) -> dict:
    now = timezone.now()
    result = outcome.as_result(op)
    metadata = {}
    if outcome.resolution is not None:
        metadata = {"conflict_type": outcome.conflict_type, "resolved_at": now.isoformat(), **result["conflict"]}
    return {
        "record_id": result["recordId"],
        "sync_status": outcome.queue_status,
        "next_retry_at": now + retry_delay(0) if outcome.status == "pending" else None,
        "failed_at": now if outcome.status == "failed" else None,
        "completed_at": now if outcome.queue_status == "completed" else None,
        "conflict_detected": outcome.resolution is not None,
        "conflict_metadata": metadata,
        "result": result,
        "operation_duration_ms": int((time.perf_counter() - started) * 1000),
        "error_message": outcome.error["message"] if outcome.error else None,
    }


def _store_outcomes(user_id: uuid.UUID, device_id: str, done: list[tuple[str, dict]]) -> None:
    """One UPDATE writes the outcome of every operation this transaction applied or refused."""
    if not done:
        return
    rows = _json(
        [
            {
                "operation_id": operation_id,
                **values,
                **{c: _timestamp(values[c]) for c, t in OUTCOME_COLUMNS if t == "timestamptz"},
            }
            for operation_id, values in done
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(STORE_OUTCOMES_SQL, [rows, user_id, device_id])
        if cursor.rowcount != len(done):
            raise DatabaseError(f"stored {cursor.rowcount} of {len(done)} sync outcomes")


def _release_claims(user_id: uuid.UUID, device_id: str, operation_ids: list[str]) -> None:
    """Drop the claims of operations not applied, so a retried upload applies them."""
    if operation_ids:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM offline_sync_queue WHERE user_id = %s AND device_id = %s AND operation_id = ANY(%s)"
                " AND sync_status = 'processing'",
                [user_id, device_id, operation_ids],
            )


def _stored_results(user_id: uuid.UUID, device_id: str, operation_ids: list[str]) -> dict[str, dict]:
    """Stored outcomes, as `duplicate`, of this user's operations that another upload claimed.

    The claim waited for that upload, so its row is normally there. If it is not (that upload
    dropped its claim after an unexpected error), the operation was not applied: the device
    retries it, as it would after any failed request.
    """
    if not operation_ids:
        return {}
    stored = dict(
        OfflineSyncOperation.objects.filter(
            user_id=user_id, device_id=device_id, operation_id__in=operation_ids
        ).values_list("operation_id", "result")
    )
    results = {}
    for operation_id in operation_ids:
        if operation_id in stored:
            results[operation_id] = {"id": operation_id, "status": "duplicate", "original": stored[operation_id]}
        else:
            results[operation_id] = {
                "id": operation_id,
                "status": "failed",
                "error": {
                    "code": "operation_interrupted",
                    "message": "Another upload of this operation stopped before applying it; send it again.",
                    "retryable": True,
                },
            }
    return results


def _apply_isolated(actor: Actor, op: IncomingOperation, known: Known, savepoints: OperationSavepoints) -> Outcome:
    """Apply one claimed operation under its own savepoint: a failure undoes this operation only.

    Unexpected errors (bugs, a lost connection) propagate after the savepoint rolled back.
    """
    for attempt in range(2):
        try:
            with savepoints.operation():
                outcome = operation_apply(actor=actor, op=op, known=known if attempt == 0 else None)
            if outcome.record is not None:
                known.written(op, outcome.record)
            return outcome
        except OperationRefused as refusal:
            return Outcome(status="failed", error=refusal.as_error())
        except IntegrityError as exc:
            # Another transaction created the row or lesson-day mark since it was read: look again.
            if attempt == 0:
                continue
            return Outcome(status="failed", error=integrity_refusal(op, exc).as_error())
        except DatabaseError as exc:
            if not is_transient(exc):
                raise
            return Outcome(
                status="pending",
                error={"code": "transient_error", "message": str(exc).split("\n")[0], "retryable": True},
            )
    raise AssertionError("unreachable")


def _plan_isolated(
    actor: Actor, op: IncomingOperation, known: Known, savepoints: OperationSavepoints
) -> Model | Outcome | None:
    """`insert_plan` under the operation's savepoint: a row to write with others, a refusal, or
    None (the operation takes `_apply_isolated`, which also judges any database error here)."""
    try:
        with savepoints.operation():
            return insert_plan(actor=actor, op=op, known=known)
    except OperationRefused as refusal:
        return Outcome(status="failed", error=refusal.as_error())
    except DatabaseError:
        return None


def _insert_together(rows: list[Model], savepoints: OperationSavepoints) -> bool:
    """One multi-row INSERT under one savepoint; False (and nothing written) if any row failed."""
    try:
        with savepoints.operation():
            type(rows[0]).objects.bulk_create(rows)
    except DatabaseError:
        return False
    return True


class _ChunkRun:
    """Applies a chunk's claimed operations and collects their outcome rows, in priority order.

    INSERTs that need no lookup are planned (`insert_plan`) and written table by table, one
    multi-row statement each (`_insert_together`): per row, the parse, plan, executor start and
    trigger set-up of a statement are most of what the database spends. Any other operation
    first writes what was planned before it, so it sees those rows. Within a table the rows keep
    the priority order, and so do their change events. Across tables no reader can tell the
    order of the writes, since the chunk commits at once, except by event seq: home tasks and
    feedback share a student's `tasks:` topic, and there a chunk's events come table by table.
    If a statement fails (a lesson day or id taken meanwhile, a lock timeout), its savepoint
    undoes it and each of its operations runs again on its own, with its own outcome.
    """

    def __init__(self, actor: Actor, ops: list[IncomingOperation], results: dict[str, dict]):
        self.actor, self.results = actor, results
        self.position = {op.operation_id: index for index, op in enumerate(ops)}
        self.known = known_read(ops)
        self.savepoints = OperationSavepoints()
        self.planned: dict[type[Model], list[tuple[IncomingOperation, Model, float]]] = {}
        self.done: list[tuple[str, dict]] = []

    def apply(self, op: IncomingOperation) -> None:
        started = time.perf_counter()
        try:
            planned = _plan_isolated(self.actor, op, self.known, self.savepoints)
        except Exception:
            self.flush()  # the operations planned before this one stand
            raise
        if isinstance(planned, Outcome):
            self._record(op, planned, started)
        elif planned is not None:
            self.planned.setdefault(type(planned), []).append((op, planned, started))
        else:
            self.flush()
            self._record(op, _apply_isolated(self.actor, op, self.known, self.savepoints), started)

    def flush(self) -> None:
        while self.planned:
            planned = self.planned.pop(next(iter(self.planned)))
            if _insert_together([row for _, row, _ in planned], self.savepoints):
                for op, row, started in planned:
                    outcome = completed_outcome(row)
                    self.known.written(op, outcome.record)
                    self._record(op, outcome, started)
                continue
            for op, _, started in planned:
                self._record(op, _apply_isolated(self.actor, op, self.known, self.savepoints), started)

    def finished(self) -> list[tuple[str, dict]]:
        """(operation id, outcome row) of every operation done, in the chunk's priority order."""
        return sorted(self.done, key=lambda item: self.position[item[0]])

    def _record(self, op: IncomingOperation, outcome: Outcome, started: float) -> None:
        values = _outcome_values(op, outcome, started)
        self.results[op.operation_id] = values["result"]
        self.done.append((op.operation_id, values))


def _run_chunk(actor: Actor, device_id: str, ops: list[IncomingOperation], results: dict[str, dict]) -> list[str]:
    """Claim, apply and record `ops` (priority order) in the current transaction.

    Fills `results` by operation id and returns the ids applied here. An unexpected error in
    one operation stops the chunk: the operations finished before it keep their outcomes, the
    claims of the rest are released, and the error is re-raised once the caller has committed.
    """
    # The claim waits as long as a concurrent upload of the same operations takes to commit (one
    # chunk); the lock timeout, which turns a wait into a `pending` outcome, is for the operations.
    claimed = _claim(actor, device_id, ops)
    set_lock_timeout()
    mine = [op for op in ops if op.operation_id in claimed]
    run = _ChunkRun(actor, mine, results)
    crash: Exception | None = None
    with connection.execute_wrapper(run.savepoints):
        try:
            for op in mine:
                run.apply(op)
            run.flush()
        except Exception as exc:  # noqa: BLE001 - re-raised by the caller after the commit
            crash = exc
            finished = {operation_id for operation_id, _ in run.done}
            _release_claims(
                actor.user_id, device_id, [op.operation_id for op in mine if op.operation_id not in finished]
            )
        done = run.finished()
        _store_outcomes(actor.user_id, device_id, done)
        run.savepoints.flush()
    results.update(
        _stored_results(actor.user_id, device_id, [op.operation_id for op in ops if op.operation_id not in claimed])
    )
    if crash is not None:
        raise _ChunkCrashed(crash)
    return [operation_id for operation_id, _ in done]


class _ChunkCrashed(Exception):
    """Carries an unexpected error out of a chunk whose finished operations are to be kept."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


# Chunk transactions open at once per server process. Under ASGI every request runs in a
# thread of its own, so twenty devices would otherwise keep twenty transactions open, each
# mostly waiting for the GIL while holding its locks and subtransaction ids (which every other
# session's snapshot must then carry and search). Waiting here, before BEGIN, costs nothing.
_chunk_slots = threading.BoundedSemaphore(settings.SYNC_CONCURRENT_TRANSACTIONS)


def _run_chunk_committed(tenant: Tenant, run) -> Any:
    """Run `run()` in its own tenant transaction; commit what a crashed chunk finished, then re-raise."""
    crashed = None
    with _chunk_slots, tenant_context(tenant):
        try:
            value = run()
        except _ChunkCrashed as exc:
            crashed = exc.error
    if crashed is not None:
        raise crashed
    return value


def operations_upload(
    *, tenant: Tenant, device_id: str, operations: list[IncomingOperation | dict], battery_mode: str = "standard"
) -> dict:
    """Apply a device's batch: new operations in priority order, stored outcomes for repeats.

    `operations` holds parsed operations, or for an operation refused on its shape, its failed result.
    Results come back in the order the device sent them.
    """
    results: list[dict | None] = [None] * len(operations)
    first_of: dict[str, int] = {}
    to_apply: list[IncomingOperation] = []
    by_id: dict[str, dict] = {}
    applied: list[str] = []

    def first_chunk() -> Actor:
        actor = actor_read(tenant)
        for index, op in enumerate(operations):
            if not isinstance(op, IncomingOperation):
                results[index] = op
                continue
            op.index = index
            op.priority = effective_priority(
                table_name=op.table_name,
                data=op.data,
                role=actor.role,
                cultural_context=op.cultural_context,
                prayer_time_context=op.prayer_time_context,
                battery_mode=battery_mode,
            )
            if op.operation_id not in first_of:
                first_of[op.operation_id] = index
                to_apply.append(op)
        to_apply.sort(key=IncomingOperation.sort_key)
        applied.extend(_run_chunk(actor, device_id, to_apply[:OPERATIONS_PER_TRANSACTION], by_id))
        return actor

    actor = _run_chunk_committed(tenant, first_chunk)
    for start in range(OPERATIONS_PER_TRANSACTION, len(to_apply), OPERATIONS_PER_TRANSACTION):
        chunk = to_apply[start : start + OPERATIONS_PER_TRANSACTION]
        applied.extend(_run_chunk_committed(tenant, lambda chunk=chunk: _run_chunk(actor, device_id, chunk, by_id)))
    for index, op in enumerate(operations):
        if results[index] is not None:
            continue
        if first_of[op.operation_id] == index:
            results[index] = by_id[op.operation_id]
        else:
            results[index] = {"id": op.operation_id, "status": "duplicate", "original": by_id[op.operation_id]}
    summary: dict[str, int] = {}
    for result in results:
        summary[result["status"]] = summary.get(result["status"], 0) + 1
    return {"deviceId": device_id, "results": results, "appliedOrder": applied, "summary": summary}
