"""Offline sync endpoints (spec: Offline Synchronization and Conflict Resolution Endpoints)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from harry_realtime.api import TenantAPIView
from harry_realtime.errors import Forbidden, Invalid, NotFound, TooLarge
from harry_realtime.inputguard import SyncBatchJSONParser
from harry_realtime.openapi import errors
from school.models import Role, User
from syncqueue import selectors, services, upload
from syncqueue.models import SYNCABLE_TABLES

from .serializers import (
    ConflictResolutionRequestSerializer,
    ConflictResolutionResponseSerializer,
    PendingConflictsResponseSerializer,
    QueueSyncRequestDocSerializer,
    QueueSyncRequestSerializer,
    QueueSyncResponseSerializer,
    SyncChangesQuerySerializer,
    SyncChangesResponseSerializer,
    SyncStatusResponseSerializer,
    parse_operation,
)

MAX_CHANGES_PAGE = 1000


class SyncQueueView(TenantAPIView):
    """POST /api/realtime/sync/queue: apply a device's queued operations, each exactly once."""

    # The service commits in chunks, each operation under its own savepoint, so one failure
    # never undoes the rest of the batch (services module docstring).
    tenant_transaction = False
    # A bad value inside one operation fails that operation, not the batch (harry_realtime/inputguard.py).
    parser_classes = [SyncBatchJSONParser]

    @extend_schema(
        request=QueueSyncRequestDocSerializer,
        responses={200: QueueSyncResponseSerializer, **errors(413)},
        summary="Apply a device's queued operations, each exactly once; one result per operation",
    )
    def post(self, request: Request) -> Response:
        operations = request.data.get("operations") if isinstance(request.data, dict) else None
        limit = settings.SYNC_MAX_BATCH_OPERATIONS
        if isinstance(operations, list) and len(operations) > limit:
            raise TooLarge(
                "batch_too_large",
                f"A batch holds at most {limit} operations; split it.",
                details={"maxOperations": limit, "received": len(operations)},
            )
        serializer = QueueSyncRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        batch_context = data.get("culturalContext") or {}
        parsed = [parse_operation(raw, batch_context=batch_context) for raw in data["operations"]]
        result = upload.operations_upload(
            tenant=self.tenant, device_id=data["deviceId"], operations=parsed, battery_mode=data["batteryMode"]
        )
        return Response(result)


class SyncStatusView(TenantAPIView):
    """GET /api/realtime/sync/status/{deviceId}"""

    @extend_schema(responses={200: SyncStatusResponseSerializer})
    def get(self, request: Request, device_id: str) -> Response:
        return Response(selectors.sync_status(device_id=device_id))


class SyncChangesView(TenantAPIView):
    """GET /api/realtime/sync/changes?cursor=&tables=&limit=: the delta pull after coming online."""

    @extend_schema(parameters=[SyncChangesQuerySerializer], responses={200: SyncChangesResponseSerializer})
    def get(self, request: Request) -> Response:
        try:
            cursor = selectors.Cursor.decode(request.query_params.get("cursor", ""))
        except ValueError as exc:
            raise Invalid("invalid_cursor", "cursor is a value returned as nextCursor.") from exc
        tables = [t for t in request.query_params.get("tables", "").split(",") if t] or list(SYNCABLE_TABLES)
        unknown = sorted(set(tables) - set(SYNCABLE_TABLES))
        if unknown:
            raise Invalid("unknown_table", "These tables are not synced.", details=unknown)
        try:
            limit = int(request.query_params.get("limit", 200))
        except ValueError as exc:
            raise Invalid("invalid_limit", "limit is an integer.") from exc
        if not 1 <= limit <= MAX_CHANGES_PAGE:
            raise Invalid("invalid_limit", f"limit is between 1 and {MAX_CHANGES_PAGE}.")
        return Response(selectors.changes_since(user=request.user, cursor=cursor, tables=tables, limit=limit))


class PendingConflictsView(TenantAPIView):
    """GET /api/realtime/conflicts/pending/{userId}: the user themself or an admin of their school."""

    @extend_schema(responses={200: PendingConflictsResponseSerializer})
    def get(self, request: Request, user_id) -> Response:
        if str(user_id) != str(request.user.pk) and request.user.role != Role.ADMIN:
            raise Forbidden("permission_denied", "Only the user themself or an admin sees their conflicts.")
        # Row-level security hides users of other schools: their conflicts are "not found".
        target = User.objects.filter(pk=user_id, organization_id=self.tenant.organization_id).first()
        if target is None:
            raise NotFound("not_found", "No such user.")
        return Response(selectors.pending_conflicts(user=target, viewer=request.user))


class ResolveConflictView(TenantAPIView):
    """POST /api/realtime/conflicts/resolve"""

    @extend_schema(
        request=ConflictResolutionRequestSerializer,
        responses={200: ConflictResolutionResponseSerializer, **errors(404, 409)},
    )
    def post(self, request: Request) -> Response:
        serializer = ConflictResolutionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return Response(
            services.conflict_resolve(
                user=request.user,
                conflict_id=data["conflictId"],
                resolution=data["resolution"],
                teacher_override=data["teacherOverride"],
                admin_approval=data["adminApproval"],
                cultural_considerations=data["culturalConsiderations"],
            )
        )
