"""Push providers behind one interface: FCM HTTP v1, APNs (HTTP/2), Web Push, and a log backend.

`backend_for(platform)` picks the provider configured in `settings.PUSH_BACKENDS` for the device's
platform. Every backend turns the provider's answer into a `SendResult` whose `outcome` is one of
`sent`, `transient` (retry later, maybe after `retry_after` seconds), `invalid_token` (deactivate
the device, never retry) or `failed` (a permanent error for this message).

Providers are reached with httpx (HTTP/2 for APNs, as Apple requires in production) and pywebpush;
the OAuth token for FCM comes from google-auth's service-account credentials, or from a
configured static token. Base URLs are settings so tests talk to a local fake over real HTTP.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import jwt
from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

SENT = "sent"
TRANSIENT = "transient"
INVALID_TOKEN = "invalid_token"
FAILED = "failed"


@dataclass(frozen=True)
class PushMessage:
    notification_id: str
    notification_type: str
    token: str
    platform: str
    title: str
    body: str
    priority: str  # low | normal | high | urgent
    expires_at: datetime
    data: dict[str, str] = field(default_factory=dict)
    ios_configuration: dict = field(default_factory=dict)
    android_configuration: dict = field(default_factory=dict)

    @property
    def ttl_seconds(self) -> int:
        return max(0, int((self.expires_at - timezone.now()).total_seconds()))


@dataclass(frozen=True)
class SendResult:
    outcome: str
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _transport_error(exc: Exception) -> SendResult:
    return SendResult(TRANSIENT, error=f"{type(exc).__name__}: {exc}")


class LogBackend:
    """Writes the push to the log and reports it sent: the default for `make run` and demos."""

    name = "log"

    def __init__(self, config: dict):
        self.config = config

    def send(self, message: PushMessage) -> SendResult:
        logger.info(
            "push %s to %s %s…: [%s] %s — %s",
            message.notification_id,
            message.platform,
            message.token[:12],
            message.priority,
            message.title,
            message.body,
        )
        return SendResult(SENT, provider_message_id=f"log-{uuid.uuid4()}")


class FcmBackend:
    """Firebase Cloud Messaging HTTP v1: POST /v1/projects/{project}/messages:send."""

    name = "fcm"
    SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
    INVALID_TOKEN_CODES = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
    TRANSIENT_CODES = {"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"}

    def __init__(self, config: dict):
        self.config = config
        self.client = httpx.Client(base_url=config["base_url"], timeout=config.get("timeout", 10))
        self._credentials = None
        self._lock = threading.Lock()

    def _access_token(self) -> str:
        if self.config.get("access_token"):
            return self.config["access_token"]
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account

        with self._lock:
            if self._credentials is None:
                self._credentials = service_account.Credentials.from_service_account_file(
                    self.config["credentials_file"], scopes=[self.SCOPE]
                )
            if not self._credentials.valid:
                self._credentials.refresh(Request())
            return self._credentials.token

    def payload(self, message: PushMessage) -> dict:
        high = message.priority in ("high", "urgent")
        android = {
            "priority": "HIGH" if high else "NORMAL",
            "ttl": f"{message.ttl_seconds}s",
            # A resend after an unknown outcome replaces the first copy on the device, not a second one.
            "collapse_key": message.notification_id,
            **message.android_configuration,
        }
        apns_headers = {
            "apns-priority": "10" if high else "5",
            "apns-expiration": str(int(message.expires_at.timestamp())),
            "apns-collapse-id": message.notification_id,
        }
        return {
            "message": {
                "token": message.token,
                "notification": {"title": message.title, "body": message.body},
                "data": message.data,
                "android": android,
                "apns": {"headers": apns_headers, "payload": {"aps": dict(message.ios_configuration.get("aps", {}))}},
            }
        }

    def send(self, message: PushMessage) -> SendResult:
        try:
            response = self.client.post(
                f"/v1/projects/{self.config['project_id']}/messages:send",
                json=self.payload(message),
                headers={"Authorization": f"Bearer {self._access_token()}"},
            )
        except httpx.TransportError as exc:
            return _transport_error(exc)
        if response.status_code == 200:
            return SendResult(SENT, provider_message_id=response.json().get("name"))
        return self.classify(response)

    def classify(self, response: httpx.Response) -> SendResult:
        try:
            error = response.json().get("error", {})
        except ValueError:
            error = {}
        status = error.get("status", "")
        codes = {d.get("errorCode") for d in error.get("details", []) if isinstance(d, dict)} - {None}
        code = next(iter(codes), status) or str(response.status_code)
        text = f"FCM {response.status_code} {code}: {error.get('message', response.text[:200])}"
        if codes & self.INVALID_TOKEN_CODES or response.status_code == 404:
            return SendResult(INVALID_TOKEN, error=text)
        if status == "INVALID_ARGUMENT" and "token" in error.get("message", "").lower():
            return SendResult(INVALID_TOKEN, error=text)
        if response.status_code == 401:
            # An expired OAuth token: drop it so the retry fetches a fresh one.
            self._credentials = None
            return SendResult(TRANSIENT, error=text)
        if response.status_code == 429 or response.status_code >= 500 or codes & self.TRANSIENT_CODES:
            return SendResult(TRANSIENT, error=text, retry_after=_retry_after(response))
        return SendResult(FAILED, error=text)


class ApnsBackend:
    """Apple Push Notification service over HTTP/2 with a token-based (ES256 JWT) provider key."""

    name = "apns"
    INVALID_TOKEN_REASONS = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic", "ExpiredToken"}
    TRANSIENT_REASONS = {"TooManyRequests", "InternalServerError", "ServiceUnavailable", "Shutdown"}
    # Apple refuses provider tokens older than an hour and throttles refreshing more than every 20 min.
    TOKEN_LIFETIME = 50 * 60

    def __init__(self, config: dict):
        self.config = config
        self.client = httpx.Client(base_url=config["base_url"], http2=True, timeout=config.get("timeout", 10))
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def _provider_token(self) -> str:
        if self.config.get("auth_token"):
            return self.config["auth_token"]
        with self._lock:
            if self._token is None or time.time() - self._token[1] > self.TOKEN_LIFETIME:
                issued = time.time()
                key = self.config.get("key") or open(self.config["key_file"]).read()
                token = jwt.encode(
                    {"iss": self.config["team_id"], "iat": int(issued)},
                    key,
                    algorithm="ES256",
                    headers={"kid": self.config["key_id"]},
                )
                self._token = (token, issued)
            return self._token[0]

    def payload(self, message: PushMessage) -> dict:
        aps = {"alert": {"title": message.title, "body": message.body}, "sound": "default"}
        if message.priority == "urgent":
            aps["interruption-level"] = "time-sensitive"
        aps.update(message.ios_configuration.get("aps", {}))
        return {"aps": aps, **message.data}

    def headers(self, message: PushMessage) -> dict[str, str]:
        return {
            "authorization": f"bearer {self._provider_token()}",
            "apns-topic": self.config["topic"],
            "apns-push-type": "alert",
            "apns-priority": {"urgent": "10", "high": "10", "normal": "5"}.get(message.priority, "1"),
            "apns-expiration": str(int(message.expires_at.timestamp())),
            "apns-collapse-id": message.notification_id,
        }

    def send(self, message: PushMessage) -> SendResult:
        try:
            response = self.client.post(
                f"/3/device/{message.token}", json=self.payload(message), headers=self.headers(message)
            )
        except httpx.TransportError as exc:
            return _transport_error(exc)
        if response.status_code == 200:
            return SendResult(SENT, provider_message_id=response.headers.get("apns-id"))
        return self.classify(response)

    def classify(self, response: httpx.Response) -> SendResult:
        try:
            reason = response.json().get("reason", "")
        except ValueError:
            reason = ""
        text = f"APNs {response.status_code} {reason}".strip()
        if response.status_code == 410 or reason in self.INVALID_TOKEN_REASONS:
            return SendResult(INVALID_TOKEN, error=text)
        if reason == "ExpiredProviderToken":
            self._token = None
            return SendResult(TRANSIENT, error=text)
        if response.status_code in (429, 500, 503) or reason in self.TRANSIENT_REASONS:
            return SendResult(TRANSIENT, error=text, retry_after=_retry_after(response))
        return SendResult(FAILED, error=text)


class WebPushBackend:
    """RFC 8030 Web Push with VAPID (pywebpush); the device token is the browser's subscription JSON."""

    name = "webpush"
    URGENCY = {"low": "low", "normal": "normal", "high": "high", "urgent": "high"}

    def __init__(self, config: dict):
        self.config = config

    def send(self, message: PushMessage) -> SendResult:
        from pywebpush import WebPushException, webpush

        try:
            subscription = json.loads(message.token)
        except ValueError:
            return SendResult(INVALID_TOKEN, error="Web Push subscription is not JSON")
        data = json.dumps({"title": message.title, "body": message.body, "data": message.data})
        try:
            response = webpush(
                subscription,
                data=data,
                vapid_private_key=self.config["vapid_private_key"],
                vapid_claims={"sub": self.config["vapid_subject"]},
                ttl=message.ttl_seconds,
                headers={"Urgency": self.URGENCY[message.priority], "Topic": message.notification_id.replace("-", "")},
                timeout=self.config.get("timeout", 10),
            )
        except WebPushException as exc:
            response = exc.response
            if response is None:
                return SendResult(TRANSIENT, error=str(exc).splitlines()[0])
            text = f"Web Push {response.status_code}: {response.text[:200]}"
            if response.status_code in (404, 410):
                return SendResult(INVALID_TOKEN, error=text)
            if response.status_code == 429 or response.status_code >= 500:
                retry_after = response.headers.get("retry-after")
                return SendResult(TRANSIENT, error=text, retry_after=float(retry_after) if retry_after else None)
            return SendResult(FAILED, error=text)
        except Exception as exc:  # noqa: BLE001 - requests' connection errors: the push service was unreachable
            return _transport_error(exc)
        return SendResult(SENT, provider_message_id=response.headers.get("location"))


BACKENDS: dict[str, type] = {"log": LogBackend, "fcm": FcmBackend, "apns": ApnsBackend, "webpush": WebPushBackend}
_instances: dict[tuple[str, str], Any] = {}
_instances_lock = threading.Lock()


def backend_for(platform: str):
    """The configured backend for a platform; one instance (one HTTP connection pool) per config."""
    name = settings.PUSH_BACKENDS.get(platform, "log")
    config = getattr(settings, f"PUSH_{name.upper()}", {}) if name != "log" else {}
    key = (name, json.dumps(config, sort_keys=True, default=str))
    with _instances_lock:
        if key not in _instances:
            _instances[key] = BACKENDS[name](config)
        return _instances[key]
