#!/usr/bin/env python
"""Schema-driven fuzzing of the REST API: schemathesis against a real uvicorn server.

  python scripts/fuzz_api.py [--max-examples N] [--seed S] [--workers W]

Creates a fresh database with two seeded schools (e2e/prepare.py), starts uvicorn on a free port,
signs an access token for school A's teacher, downloads the OpenAPI schema the server publishes
and runs schemathesis over every operation with a fixed seed. Checks: no 5xx, and every status
code, content type, header and body as the schema documents them. Exits with schemathesis' code;
the server's log is printed when the run fails. `make test` runs a few examples per operation,
`make fuzz` many more.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def prepare(db_name: str) -> dict:
    out = subprocess.run(
        [sys.executable, "e2e/prepare.py", "create", db_name], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def drop(db_name: str) -> None:
    subprocess.run([sys.executable, "e2e/prepare.py", "drop", db_name], cwd=ROOT, check=False)


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, int]:
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "0", "--ws", "websockets"]
        + ["--lifespan", "off", "--no-access-log", "harry_realtime.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())
        if match:
            return process, int(match[1])
        time.sleep(0.2)
    process.kill()
    sys.exit(f"uvicorn did not start:\n{log_path.read_text()}")


def config_with_real_ids(schools: dict) -> str:
    """schemathesis.toml: seeded ids (own school and the other's) mixed into the generated ids, so
    requests reach the logic behind "not found" and cross the school boundary."""
    a, b = schools["a"], schools["b"]
    dictionaries = {
        "groups": [a["group"], a["other_group"], b["group"]],
        "students": [a["student"], a["other_student"], b["student"]],
        "users": [a["users"]["teacher"]["id"], a["users"]["student"]["id"], b["users"]["teacher"]["id"]],
    }
    bindings = {
        "path.group_id": "groups",
        "path.user_id": "users",
        "body.groupId": "groups",
        "body.studentId": "students",
        "body.student_id": "students",
        "body.studentIds[*]": "students",
        "body.target_user_ids[*]": "users",
        "body.targetIds[*]": "students",
    }
    lines = []
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", "values = [" + ", ".join(f'"{v}"' for v in values) + "]", ""]
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}' for key, name in bindings.items()]
    return "\n".join(lines) + "\n"


def teacher_token(user: dict, key: str) -> str:
    now = int(time.time())
    claims = {
        "sub": user["id"],
        "organization_id": user["organization_id"],
        "role": user["role"],
        "type": "access",
        "iat": now,
        "exp": now + 3600,
        "iss": "harry-realtime",
    }
    return jwt.encode(claims, key, algorithm="HS256")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--exclude-path", action="append", default=[], help="leave this API path out")
    parser.add_argument(
        "--phases", default="examples,fuzzing,stateful", help="schemathesis phases (coverage: boundary values, slow)"
    )
    args = parser.parse_args()

    db_name = f"fuzz_{os.getpid()}_{secrets.token_hex(3)}"
    prepared = prepare(db_name)
    key = secrets.token_hex(32)
    env = {
        **os.environ,
        **prepared["env"],
        "JWT_SIGNING_KEY": key,
        "CHANNEL_LAYER_PREFIX": f"fuzz{secrets.token_hex(4)}",
        "PYTHONUNBUFFERED": "1",
    }
    workdir = Path(tempfile.mkdtemp(prefix="harry-fuzz-"))
    process, port = start_server(env, workdir / "server.log")
    started = time.monotonic()
    try:
        base = f"http://127.0.0.1:{port}"
        token = teacher_token(prepared["schools"]["a"]["users"]["teacher"], key)
        request = urllib.request.Request(
            f"{base}/api/schema/?format=json", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            (workdir / "openapi.json").write_bytes(response.read())
        (workdir / "schemathesis.toml").write_text(config_with_real_ids(prepared["schools"]))
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(workdir / "schemathesis.toml"),
            "run",
            str(workdir / "openapi.json"),
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            CHECKS,
            "--seed",
            str(args.seed),
            "--max-examples",
            str(args.max_examples),
            "--phases",
            args.phases,
            *[option for path in args.exclude_path for option in ("--exclude-path", path)],
            "--workers",
            args.workers,
            "--generation-database",
            "none",
            "--no-color",
            "--output-sanitize",
            "true",
        ]
        # In the run's own folder: schemathesis keeps a cache (.schemathesis/) where it runs.
        result = subprocess.run(command, cwd=workdir, env=env, check=False)
        print(
            f"[fuzz] {args.max_examples} examples per operation, seed {args.seed}: "
            f"{time.monotonic() - started:.0f} s, exit code {result.returncode}"
        )
        if result.returncode != 0:
            print(f"[fuzz] server log: {workdir / 'server.log'}")
            print((workdir / "server.log").read_text()[-20000:])
        return result.returncode
    finally:
        process.terminate()
        process.wait(timeout=30)
        drop(db_name)


if __name__ == "__main__":
    sys.exit(main())
