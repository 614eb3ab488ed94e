import itertools
import uuid

import pytest
from django.utils import timezone

_ids = itertools.count()


def op(table, operation="INSERT", *, data=None, record_id=None, version=None, op_id=None, **extra):
    """One OfflineOperation as a device sends it."""
    body = {
        "id": op_id or f"op-{next(_ids)}-{uuid.uuid4().hex[:6]}",
        "operation": operation,
        "tableName": table,
        "data": data if data is not None else {},
        "timestamp": extra.pop("timestamp", timezone.now().isoformat()),
        "priority": extra.pop("priority", 5),
        "conflictResolutionStrategy": extra.pop("strategy", "teacher_authority"),
    }
    if record_id is not None:
        body["recordId"] = str(record_id)
    if version is not None:
        body["syncVersion"] = version
    body.update(extra)
    return body


@pytest.fixture
def upload():
    def post(client, operations, *, device="device-1", status=200, **extra):
        response = client.post(
            "/api/realtime/sync/queue", {"deviceId": device, "operations": operations, **extra}, format="json"
        )
        assert response.status_code == status, response.content
        return response.json()

    return post
