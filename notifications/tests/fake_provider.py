"""A local stand-in for FCM HTTP v1, APNs and a Web Push service, reached over real HTTP.

It answers the way the real services do, including their error bodies, and records every request.
`script(token, *responses)` queues answers for one token (default: success); `hold(token)` makes
the server accept that token's request and then wait until `release(token)`, so a test can kill
the worker while the provider has the push in hand.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class Answer:
    status: int
    body: dict | None = None
    headers: dict = field(default_factory=dict)


def fcm_error(status: int, grpc_status: str, error_code: str | None = None, message: str = "") -> Answer:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]
    return Answer(
        status,
        {"error": {"code": status, "message": message or grpc_status, "status": grpc_status, "details": details}},
    )


def apns_error(status: int, reason: str, **headers) -> Answer:
    body = {"reason": reason}
    if status == 410:
        body["timestamp"] = 1700000000000
    return Answer(status, body, headers)


@dataclass
class Received:
    kind: str  # fcm | apns | webpush
    token: str
    path: str
    headers: dict  # lower-case names
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class FakeProvider:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[str, list[Answer]] = {}
        self._holds: dict[str, threading.Event] = {}
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                provider._handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        for event in self._holds.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()

    def script(self, token: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts.setdefault(token, []).extend(answers)

    def hold(self, token: str) -> None:
        self._holds[token] = threading.Event()

    def release(self, token: str) -> None:
        self._holds[token].set()

    def for_token(self, token: str) -> list[Received]:
        return [r for r in self.received if r.token == token]

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        path = handler.path
        if path.startswith("/v1/projects/") and path.endswith("/messages:send"):
            kind, token = "fcm", json.loads(body)["message"]["token"]
            default = Answer(200, {"name": f"{path.split('/messages')[0][4:]}/messages/{uuid.uuid4().int % 10**16}"})
        elif path.startswith("/3/device/"):
            kind, token = "apns", unquote(path.removeprefix("/3/device/"))
            default = Answer(200, None, {"apns-id": str(uuid.uuid4()).upper()})
        elif path.startswith("/wp/"):
            kind, token = "webpush", path.removeprefix("/wp/")
            default = Answer(201, None, {"location": f"{self.url}/msg/{uuid.uuid4()}"})
        else:
            kind, token, default = "unknown", "", Answer(404, {"error": "unknown path"})
        with self._lock:
            self.received.append(Received(kind, token, path, {k.lower(): v for k, v in handler.headers.items()}, body))
            queue = self._scripts.get(token) or []
            answer = queue.pop(0) if queue else default
        hold = self._holds.get(token)
        if hold is not None:
            self.arrived.set()
            hold.wait(timeout=30)
        payload = json.dumps(answer.body).encode() if answer.body is not None else b""
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the client (a killed worker) is gone
