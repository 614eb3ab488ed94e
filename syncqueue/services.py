"""Stored offline operations: retry (`operation_retry`) and manual conflict resolution
(`conflict_resolve`), each on one stored row in one transaction."""

from __future__ import annotations

import uuid

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from harry_realtime.errors import Conflict, Forbidden, NotFound
from harry_realtime.tenancy import Tenant, tenant_context
from school.models import Role, User

from .apply import (
    IncomingOperation,
    Outcome,
    actor_load,
    apply_resolution,
    check_row_access,
    integrity_refusal,
    is_transient,
    operation_apply,
    operation_from_row,
    retry_delay,
    row_finish,
    set_lock_timeout,
)
from .models import OfflineSyncOperation
from .policy import AUTHORITY_ROLES, resolve_conflict
from .tables import (
    TABLES,
    OperationRefused,
    clean_changes,
    values_of,
)

# ---------------------------------------------------------------------------------------------
# Stored operations: retry and manual resolution


def operation_retry(*, operation_pk: uuid.UUID, tenant: Tenant) -> str | None:
    """Retry one pending operation in its owner's tenant context; returns its new status.

    None when another worker holds it or it is no longer due.
    """
    actor = actor_load(tenant=tenant)
    failure: Outcome | None = None
    try:
        with tenant_context(tenant):
            set_lock_timeout()
            row = (
                OfflineSyncOperation.objects.select_for_update(skip_locked=True)
                .filter(pk=operation_pk, sync_status="pending", next_retry_at__lte=timezone.now())
                .first()
            )
            if row is None:
                return None
            op = operation_from_row(row)
            outcome = operation_apply(actor=actor, op=op)
            row.retry_count += 1
            row.last_retry_at = timezone.now()
            row.next_retry_at = None
            row_finish(row, op, outcome)
            return row.sync_status
    except OperationRefused as refusal:
        failure = Outcome(status="failed", error=refusal.as_error())
    except IntegrityError as exc:
        failure = Outcome(status="failed", error=integrity_refusal(op, exc).as_error())
    except DatabaseError as exc:
        if not is_transient(exc):
            raise
        failure = Outcome(status="pending", error={"code": "transient_error", "message": str(exc).split("\n")[0]})
    with tenant_context(tenant):
        row = OfflineSyncOperation.objects.select_for_update().get(pk=operation_pk)
        if row.sync_status != "pending":
            return row.sync_status
        op = operation_from_row(row)
        row.retry_count += 1
        row.last_retry_at = timezone.now()
        if failure.status == "pending" and row.retry_count >= row.max_retries:
            message = f"Gave up after {row.retry_count} tries: {failure.error['message']}"
            failure = Outcome(status="failed", error={"code": "retries_exhausted", "message": message})
        row.next_retry_at = row.last_retry_at + retry_delay(row.retry_count) if failure.status == "pending" else None
        row_finish(row, op, failure)
        return row.sync_status


@transaction.atomic
def conflict_resolve(
    *,
    user: User,
    conflict_id: uuid.UUID,
    resolution: str,
    teacher_override: bool = False,
    admin_approval: bool = False,
    cultural_considerations: dict | None = None,
) -> dict:
    """Settle a conflict the device left to the user (`prompt_user`). Runs in the caller's context.

    A refusal of the operation itself (`OperationRefused`, e.g. the record is gone) is a 400.
    """
    row = _pending_conflict(user=user, conflict_id=conflict_id)
    _check_authority(user=user, teacher_override=teacher_override, admin_approval=admin_approval)
    chosen = "client_wins" if (teacher_override or admin_approval) else resolution
    op = operation_from_row(row)
    outcome = _apply_manual_resolution(user=user, row=row, op=op, chosen=chosen)
    row_finish(
        row,
        op,
        outcome,
        resolved_by=str(user.pk),
        teacher_override=teacher_override,
        admin_approval=admin_approval,
        cultural_considerations=cultural_considerations or {},
    )
    return {
        "conflictId": str(row.pk),
        "status": "resolved",
        "resolution": chosen,
        "result": row.result,
        "record": outcome.record,
        "syncVersion": outcome.sync_version,
    }


def _pending_conflict(*, user: User, conflict_id: uuid.UUID) -> OfflineSyncOperation:
    row = OfflineSyncOperation.objects.select_for_update().filter(pk=conflict_id).first()
    if row is None:
        raise NotFound("not_found", "No such conflict.")
    if row.user_id != user.pk and user.role != Role.ADMIN:
        raise Forbidden("permission_denied", "Only the user themself or an admin resolves a conflict.")
    if row.sync_status != "conflict":
        raise Conflict("conflict_not_pending", "This conflict is not pending.")
    return row


def _check_authority(*, user: User, teacher_override: bool, admin_approval: bool) -> None:
    if admin_approval and user.role != Role.ADMIN:
        raise Forbidden("admin_approval_requires_admin", "Only an admin gives admin approval.")
    if teacher_override and user.role not in AUTHORITY_ROLES:
        raise Forbidden("teacher_override_requires_teacher", "Only teachers and admins override.")


def _apply_manual_resolution(*, user: User, row: OfflineSyncOperation, op: IncomingOperation, chosen: str) -> Outcome:
    """The stored operation applied again with the user's choice, as its owner's tenant would."""
    actor = actor_load(tenant=Tenant(organization_id=row.organization_id, user_id=user.pk, role=user.role))
    spec = TABLES[op.table_name]
    changes = clean_changes(spec, actor.role, op.operation_type, op.data)
    obj = spec.model.objects.select_for_update().filter(pk=op.record_id).first()
    if obj is None:
        raise OperationRefused("not_found", "The record is gone.", {"id": str(op.record_id)})
    check_row_access(actor, op.table_name, obj)
    result = resolve_conflict(
        table_name="manual",
        role=actor.role,
        requested_strategy=chosen,
        client_changes=changes,
        server_values=values_of(obj, changes.keys()),
        base_values=op.old_data,
    )
    result.rule = f"manual:{chosen}"
    return apply_resolution(spec, actor, op, obj, changes, "concurrent_update", result)
