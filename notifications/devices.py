"""Device tokens: registration (one row per device, the token may move between users) and deactivation."""

from __future__ import annotations

import logging
import uuid

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from harry_realtime.errors import Conflict, NotFound
from harry_realtime.tenancy import Tenant

from .models import DeviceToken

logger = logging.getLogger(__name__)


# Device tokens


def device_token_register(
    *,
    tenant: Tenant,
    platform: str,
    token: str,
    app_version: str | None = None,
    language: str | None = None,
) -> tuple[DeviceToken, bool]:
    """The caller's device; `(row, created)`. Re-registering refreshes the row; a token last
    registered by someone else (any school) is released from them first."""
    with transaction.atomic():
        existing = (
            DeviceToken.objects.select_for_update().filter(user_id=tenant.user_id, token=token, is_active=True).first()
        )
        if existing is not None:
            existing.platform = platform
            existing.app_version = app_version
            existing.language = language
            existing.last_registered_at = timezone.now()
            existing.save(update_fields=["platform", "app_version", "language", "last_registered_at"])
            return existing, False
        with connection.cursor() as cursor:
            cursor.execute("SELECT push_release_device_token(%s)", [token])
        try:
            with transaction.atomic():
                device = DeviceToken.objects.create(
                    organization_id=tenant.organization_id,
                    user_id=tenant.user_id,
                    platform=platform,
                    token=token,
                    app_version=app_version,
                    language=language,
                )
        except IntegrityError as exc:
            raise Conflict("device_token_conflict", "The token is being registered concurrently; retry.") from exc
        return device, True


@transaction.atomic
def device_token_deactivate(*, device_id: uuid.UUID | str, reason: str) -> DeviceToken:
    """Soft delete: delivery history keeps pointing at the row. RLS limits it to owner and admins."""
    device = DeviceToken.objects.select_for_update().filter(pk=device_id).first()
    if device is None:
        raise NotFound("device_not_found", "No such device.")
    if device.is_active:
        device.is_active = False
        device.deactivated_at = timezone.now()
        device.deactivation_reason = reason
        device.save(update_fields=["is_active", "deactivated_at", "deactivation_reason"])
    return device
