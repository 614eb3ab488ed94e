"""Issue 13 item 7: no start on the published development keys, and no token in any log line of
the real ASGI server (uvicorn logs WebSocket URLs with their query string)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from websockets.sync.client import connect

from harry_realtime.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "k" * 64
KEY_VARIABLES = ("HARRY_INSECURE_DEV_KEYS", "DJANGO_SECRET_KEY", "JWT_SIGNING_KEY")


def _settings_process(**overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env.update({k: v for k, v in overrides.items() if v is not None})
    code = "import django; django.setup(); from django.conf import settings; print(settings.JWT_ALGORITHM)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_published_default_keys_refuse_to_start():
    result = _settings_process()
    assert result.returncode != 0
    assert "published development key" in result.stderr


def test_a_default_jwt_key_refuses_even_with_a_strong_secret_key():
    result = _settings_process(DJANGO_SECRET_KEY=STRONG_KEY, JWT_SIGNING_KEY=settings.DEV_SECRET_KEY)
    assert result.returncode != 0
    assert "JWT_SIGNING_KEY" in result.stderr


def test_a_short_key_refuses_to_start():
    result = _settings_process(DJANGO_SECRET_KEY="short", JWT_SIGNING_KEY=STRONG_KEY)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_own_keys_or_the_explicit_development_flag_start():
    assert _settings_process(DJANGO_SECRET_KEY=STRONG_KEY).returncode == 0
    assert _settings_process(DJANGO_SECRET_KEY=STRONG_KEY, JWT_SIGNING_KEY="j" * 40).returncode == 0
    assert _settings_process(HARRY_INSECURE_DEV_KEYS="1").returncode == 0


def test_redact_masks_secret_parameters_and_jwts():
    from harry_realtime.logredact import redact

    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    line = f'1.2.3.4 - "WebSocket /realtime/v1/websocket?vsn=2.0.0&apikey={jwt}" [accepted] access_token=abc&x=1'
    masked = redact(line)
    assert jwt not in masked and "abc" not in masked
    assert "vsn=2.0.0" in masked and "x=1" in masked
    assert redact(f"Authorization: Bearer {jwt}") == "Authorization: Bearer [REDACTED]"


@pytest.fixture
def uvicorn_server():
    """The real server the way the e2e suite and production start it (uvicorn's own log config)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HARRY_INSECURE_DEV_KEYS": "1", "LOG_LEVEL": "INFO"}
    args = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "0", "--ws", "websockets"]
    with ServerProcess(
        [*args, "--log-level", "info", "--lifespan", "off", "harry_realtime.asgi:application"], env
    ) as server:
        yield server


def test_tokens_never_reach_the_server_log(uvicorn_server, schools):
    from harry_realtime.auth import issue_access_token

    port = uvicorn_server.port
    token = issue_access_token(schools.a.teacher_user)
    with connect(f"ws://127.0.0.1:{port}/realtime/v1/websocket?vsn=2.0.0&apikey={token}") as socket:
        socket.send('[null,"1","phoenix","heartbeat",{}]')
        assert "phx_reply" in socket.recv(timeout=10)
    # uvicorn's access log writes the full URL of HTTP requests.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?access_token={token}", timeout=10) as response:
        response.read()
    log = uvicorn_server.stop(grace=30)

    assert "WebSocket /realtime/v1/websocket?vsn=2.0.0&apikey=[REDACTED]" in log
    assert "/healthz?access_token=[REDACTED]" in log
    assert token not in log
    assert token.split(".")[2] not in log  # not even the signature
