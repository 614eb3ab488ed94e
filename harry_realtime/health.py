from django.db import connection
from django.http import JsonResponse

from harry_realtime import redis_conn


def _database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - health reports any failure
        return False, type(exc).__name__


def redis_ok() -> tuple[bool, str]:
    try:
        client = redis_conn.sync_client(socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - health reports any failure
        return False, type(exc).__name__


def healthz(request):
    db_ok, db_detail = _database_ok()
    redis_up, redis_detail = redis_ok()
    healthy = db_ok and redis_up
    body = {
        "status": "ok" if healthy else "unavailable",
        "checks": {"database": db_detail, "redis": redis_detail},
    }
    return JsonResponse(body, status=200 if healthy else 503)
