"""Abstract bases shared by every tenant table."""

import uuid

from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone


class UUIDModel(models.Model):
    # db_default too, so rows written by triggers and raw SQL get ids and timestamps.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)

    class Meta:
        abstract = True


class TimestampedModel(UUIDModel):
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)

    class Meta:
        abstract = True


class TenantModel(TimestampedModel):
    """A row that belongs to one school; row-level security keys on `organization_id`."""

    organization = models.ForeignKey("school.Organization", on_delete=models.CASCADE, related_name="+")

    class Meta:
        abstract = True


class SyncVersionedModel(TenantModel):
    """Optimistic locking for offline sync: a trigger bumps `sync_version` on every update."""

    sync_version = models.BigIntegerField(default=1, db_default=1, editable=False)

    class Meta:
        abstract = True


class RefreshToken(TenantModel):
    """One issued refresh token; `id` is its JWT `jti`.

    A sign-in starts a family (`family_id`, also carried by the family's access tokens); each
    refresh spends one token (`used_at`) and adds the next. Spending a spent token again revokes
    the whole family (`revoked_at`), as does signing out. Rows are pruned after they expire.
    """

    family_id = models.UUIDField()
    user = models.ForeignKey("school.User", on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "auth_refresh_tokens"
        indexes = [
            models.Index(fields=["family_id"], name="auth_refresh_tokens_family"),
            models.Index(fields=["user", "expires_at"], name="auth_refresh_tokens_user_exp"),
        ]

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else "spent" if self.used_at else "unused"
        return f"Refresh token of {self.user} ({state})"
