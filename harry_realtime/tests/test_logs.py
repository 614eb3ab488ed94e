"""Structured logs: one JSON line per request, socket lifecycle event and job; no token in any."""

import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from harry_realtime.logs import JsonFormatter
from harry_realtime.testing import Socket, token

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


def json_lines(caplog, logger: str) -> list[dict]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == logger]


def test_the_formatter_writes_one_json_object_with_the_extra_fields():
    record = logging.LogRecord("harry.request", logging.INFO, __file__, 1, "GET %s", ("/healthz",), None)
    record.request_id, record.organization_id = "abc12345", "org-1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line) | {"ts": None} == {
        "ts": None,
        "level": "INFO",
        "logger": "harry.request",
        "message": "GET /healthz",
        "request_id": "abc12345",
        "organization_id": "org-1",
    }


async def test_a_sockets_lifecycle_is_logged_without_its_token(schools, caplog):
    caplog.set_level("INFO", logger="harry.socket")
    user = schools.a.teacher_user
    access = token(user)
    socket = Socket(apikey=access)
    await socket.connect()
    topic = f"realtime:attendance:org_{schools.a.org.pk}:group_{schools.a.group.pk}"
    assert (await socket.join(topic, access)).payload["status"] == "ok"
    assert (await socket.join(f"realtime:attendance:org_{schools.b.org.pk}:group_x", access)).payload[
        "status"
    ] == "error"
    await socket.close()
    await sync_to_async(connections.close_all)()

    lines = json_lines(caplog, "harry.socket")
    assert [line["event"] for line in lines] == [
        "socket_opened",
        "socket_authenticated",
        "channel_joined",
        "join_refused",
        "socket_closed",
    ]
    assert len({line["connection_id"] for line in lines}) == 1
    assert lines[-1]["user_id"] == str(user.pk) and lines[-1]["organization_id"] == str(user.organization_id)
    assert lines[-1]["reason"] == "client" and lines[-1]["duration_s"] >= 0
    assert access not in caplog.text and "apikey" not in caplog.text


def test_a_job_is_one_line(schools, caplog):
    from harry_realtime.tasks import evaluate_alerts

    caplog.set_level("INFO", logger="harry.job")
    evaluate_alerts.apply()
    [line] = json_lines(caplog, "harry.job")
    assert line["task"] == "harry_realtime.evaluate_alerts" and line["state"] == "SUCCESS"
    assert line["job_id"] and line["duration_ms"] >= 0


def test_uvicorns_invalid_utf8_error_is_a_warning_without_a_traceback(caplog):
    """uvicorn logs a client's text frame that is not UTF-8 (which it closes 1007) as an ERROR with
    a traceback; any client could fill the log with those (tests/security/test_ws_frame_fuzz_server.py
    sends the frames to the real server)."""
    logger = logging.getLogger("uvicorn.error")
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        try:
            b"\xff".decode()
        except UnicodeDecodeError:
            logger.exception("Invalid UTF-8 sequence received from client.")
            logger.exception("Something else failed.")
    fault, other = [r for r in caplog.records if r.name == "uvicorn.error"]
    assert (fault.levelname, fault.exc_info, fault.exc_text) == ("WARNING", None, None)
    assert (other.levelname, other.exc_info is not None) == ("ERROR", True)
