import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import DeviceToken, PushNotification

from .fake_provider import FakeProvider


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.fixture(scope="session")
def apns_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def vapid_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def fake():
    provider = FakeProvider()
    yield provider
    provider.close()


@pytest.fixture
def providers(fake, settings, apns_key, vapid_key):
    """Real backends pointed at the fake provider; retries fast enough for tests."""
    settings.PUSH_BACKENDS = {"android": "fcm", "ios": "apns", "web": "webpush"}
    settings.PUSH_FCM = {"base_url": fake.url, "project_id": "harry-test", "access_token": "fcm-test-token"}
    settings.PUSH_APNS = {
        "base_url": fake.url,
        "topic": "uz.harry.student",
        "team_id": "TEAM123456",
        "key_id": "KEY1234567",
        "key": apns_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    }
    raw = vapid_key.private_numbers().private_value.to_bytes(32, "big")
    settings.PUSH_WEBPUSH = {"vapid_private_key": b64url(raw), "vapid_subject": "mailto:push@harry.test"}
    settings.PUSH_RETRY_BASE_SECONDS = 60
    settings.PUSH_RETRY_MAX_SECONDS = 600
    return fake


def web_subscription(fake, name: str) -> str:
    """A browser PushSubscription JSON whose endpoint is the fake push service."""
    ua_key = ec.generate_private_key(ec.SECP256R1())
    public = ua_key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return json.dumps(
        {"endpoint": f"{fake.url}/wp/{name}", "keys": {"p256dh": b64url(public), "auth": b64url(os.urandom(16))}},
        sort_keys=True,
    )


@pytest.fixture
def make_device():
    def make(user, token, platform="android", language=None):
        with dangerously_platform_context():
            return DeviceToken.objects.create(
                organization_id=user.organization_id, user=user, platform=platform, token=token, language=language
            )

    return make


@pytest.fixture
def make_push():
    def make(user, **fields):
        values = {
            "organization_id": user.organization_id,
            "target_user": user,
            "notification_type": "system_alert",
            "title_en": "Hello",
            "body_en": "School opens at nine.",
            "prayer_time_aware": False,
        }
        values.update(fields)
        with dangerously_platform_context():
            return PushNotification.objects.create(**values)

    return make


def reload(row):
    with dangerously_platform_context():
        row.refresh_from_db()
    return row
